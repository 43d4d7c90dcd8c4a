"""outpost-apply: the on-host agent that makes a host match an outpost manifest.

Shipped as one zipapp (built by components/render/agent.py from this package and ../__main__.py)
to /usr/local/lib/outpost/outpost-apply.py by the base setup, and run as root
(`sudo -n python3 ...`) by every outpost `remote.Command`:

    outpost-apply apply NAME TOKEN < manifest.json   ensure packages, users, dirs, files and
                                                      units; remove what the previous manifest
                                                      of NAME had and this one drops; run the
                                                      restart plan; print one summary line
    outpost-apply remove NAME TOKEN                  undo what manifest NAME set up, unless a
                                                      successor (other TOKEN) owns it: the files
                                                      its apply overwrote get their originals
                                                      back (kept in originals/); its users
                                                      stay, locked, with their data unless the
                                                      manifest says purge
    outpost-apply restart NAME                       run stored manifest NAME's restart plan now
    outpost-apply switch GROUP                       flip a blue-green group to its other slot
    outpost-apply status                             list the stored manifests
    outpost-apply report --json                      units, replica health, version, last log
                                                      line and token of every stored manifest
    outpost-apply drift --json [--repair]            what differs from the stored manifests;
                                                      --repair re-applies the drifted ones
    outpost-apply repair NAME | rollback NAME        re-apply NAME as last applied / the
                                                      version before it (agent.log records it)
    outpost-apply logs NAME [--since=W] [--lines=N] [--follow]   its units' journal, JSON lines

The manifest format and the exact behaviour are documented in docs/manifest.md of the outpost
repository. Service users own their homes and are not trusted: every file operation walks its
path from / with one directory fd per level (O_NOFOLLOW | O_DIRECTORY) and acts on those fds
(dir_fd, fchown, fchmod), refusing symlinks and foreign-owned directories (see fs.py).
An apply records the work it owes (restarts, daemon-reloads, leftovers) in its state before it
changes any file, so a run that fails or is cut off at any step converges on the next one.
Python 3 standard library only; every external command runs from an argv list, every wait is
bounded, failures end in one paragraph on stderr and a non-zero exit.

The modules, bottom first; each imports only modules above it in this list (tests/test_layout.py
checks it). The classes stack the same way: `cli.Agent` is `Operate`, which is `Applier`, ...,
down to `Host`, each adding one concern's methods.

    base        the error type, the state directory, running a command
    manifest    parsing and checking a manifest; the only place file contents are decoded
    host        the root every host path is under, the command runner (class Host)
    masking     secret values hidden in all the agent prints (Masking)
    fs          fd-based path walking, reading and removing without following links (SafeFiles)
    staging     stage, validate and commit files atomically (Staging)
    state       the stored state per manifest and the host lock (State)
    journal     the agent log and the kept applied/previous manifests (Journal)
    originals   the host's own files kept before a manifest overwrote them (Originals)
    accounts    packages, users and their retirement (Accounts)
    units       systemctl: enable, start, stop, daemon-reload (Units)
    health      HTTP health probes and haproxy's admin socket (functions)
    restarts    the restart plan, blue-green switches, rollback of a failed group (Restarts)
    apply       apply and remove (Applier)
    operate     status, report, drift, repair, rollback, logs (Operate)
    cli         Agent and main()
"""
