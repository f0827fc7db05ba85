"""The replication daemon inside each node: envelopes, versions, merge rules, and the MQTT transport.

``hlc``, ``records`` and ``envelope`` are the pure core (no broker, no database);
``transport`` is the only module that talks MQTT.
"""
