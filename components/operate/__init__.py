"""Day-two operations on a deployed stack, over the same pinned SSH connections it deploys with:
`status` (what runs and whether it matches the stack), `drift` (hand edits, and their repair),
`logs` (a service's journal across hosts) and `rollback` (the previous version, host by host).

Each asks the on-host agent (files/agent/outpost_agent) through one SSH session per host;
nothing beyond the agent is installed on the hosts.
"""
