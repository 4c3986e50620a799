"""The closest public methods as algorithm plug-ins (agents.algorithms.base), each written against the public
protocol only, as an outside user would: ``--algos benchmarks.suite.peers.flow_grpo:FlowGRPO``."""
