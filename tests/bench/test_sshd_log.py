"""How `make bench` counts SSH use on the VM's sshd log (bench/sshd_log.py): the same parser for
both tools, the log reader's own logins left out. (Its table: test_bench_table.py.)"""

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
