"""One module per reproduced paper (``logits``, ``uncertainty``, ``metric``, ``dyart``), each
registering a :class:`robustlab.reproduce.plan.Paper` subclass."""
