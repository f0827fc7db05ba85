"""A node's front doors, together so the architecture shows in the folders: the SSH platform CLI
(``ssh``, ``platform_cli``), the certmgr REST API (``rest``), their shared credentials and throttle
(``auth``), and the per-node lifecycle that opens and closes them with the agent (``frontdoors``).
Each door is a thin adapter over the node operations: nothing is implemented twice."""
