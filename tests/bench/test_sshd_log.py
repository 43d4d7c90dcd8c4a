"""How `make bench` counts SSH use on the VM's sshd log (bench/sshd_log.py), and how it prints the
outpost/Ansible ratios: the same parser for both tools, the log reader's own logins left out."""

from bench.ansible_vs_outpost import Phase, ratio, table
from bench.sshd_log import SshCount, count_lines

# sshd -o LogLevel=VERBOSE, as journalctl -o cat prints it (OpenSSH 10, Debian 13).
LOG = """\
Connection from 127.0.0.1 port 41000 on 10.0.2.15 port 22 rdomain ""
Accepted key ED25519 SHA256:abc found at /root/.ssh/authorized_keys:1
Accepted publickey for root from 127.0.0.1 port 41000 ssh2: ED25519 SHA256:abc
pam_unix(sshd:session): session opened for user root(uid=0) by root(uid=0)
Starting session: command for root from 127.0.0.1 port 41000 id 0
Accepted publickey for admin from 127.0.0.1 port 41002 ssh2: ED25519 SHA256:abc
Starting session: command for admin from 127.0.0.1 port 41002 id 0
Starting session: command for admin from 127.0.0.1 port 41002 id 1
Starting session: subsystem 'sftp' for admin from 127.0.0.1 port 41002 id 2
Close session: user admin from 127.0.0.1 port 41002 id 2
Connection closed by authenticating user root 127.0.0.1 port 41004 [preauth]
Accepted publickey for admin from 127.0.0.1 port 41006 ssh2: ED25519 SHA256:abc
Starting session: command for admin from 127.0.0.1 port 41006 id 0
""".splitlines()


def test_connections_and_multiplexed_sessions_are_counted_apart():
    assert count_lines(LOG, set()) == SshCount(connections=3, sessions=5)


def test_the_log_readers_own_logins_are_left_out():
    assert count_lines(LOG, {41000, 41006}) == SshCount(connections=1, sessions=3)


def test_refused_logins_and_closed_sessions_count_nothing():
    assert count_lines([l for l in LOG if "41004" in l or l.startswith("Close")], set()) == SshCount(0, 0)


def test_ratios_and_table():
    assert ratio(0, 0) == "=" and ratio(1, 0) == "n/a" and ratio(3, 12) == "0.25" and ratio(None, 1) == ""
    ours = [Phase("fresh", 50.0, 6, 6, "6 commands"), Phase("no change", 1.0, 0, 0, "0 commands"),
            Phase("tag", 20.0, 1, 1, "1 commands", sent=100, lost=0)]
    theirs = [Phase("fresh", 100.0, 1, 80, "40 tasks"), Phase("no change", 20.0, 1, 30, "40 tasks"),
              Phase("tag", 40.0, 1, 40, "40 tasks", sent=200, lost=3)]
    text = table(ours, theirs, "tcg", [{"hosts": 10, "services": 100, "resources": 500, "seconds": 1.5,
                                       "peak_mib": 100.0}])
    assert "re-apply, no change" in text and "0.05" in text
    lost = next(l for l in text.splitlines() if "requests lost" in l)
    assert lost.split()[-3:] == ["0", "3", "0.00"]
    assert "    10       100        500     1.50" in text


def test_a_tool_left_out_shows_a_dash():
    text = table([Phase("fresh", 50.0, 6, 6, "6 commands")], [], "kvm", None)
    row = next(l for l in text.splitlines() if "wall seconds" in l)
    assert row.split()[-2:] == ["50.0", "-"] and "program evaluation" not in text
