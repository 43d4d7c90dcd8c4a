"""The zipapp's entry point (`python3 /usr/local/lib/outpost/outpost-apply.py ARGS`): the agent's
command line, outpost_agent.cli."""

from outpost_agent.cli import entry

entry()
