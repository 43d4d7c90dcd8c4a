"""Names and paths a host already has, which no stack may take over: the unit and user names a
service may not have, the system accounts a service may not run as, and the places a service's
files may never go. Pure data, at the bottom of the config layer: the config checks
(`checks.py`, `takeover.py`) and the service renderer all read it from here.
"""

# Units and users a host already has: a service named like one of them would replace it.
RESERVED = {"ssh", "sshd", "caddy", "haproxy", "nginx", "podman", "root", "admin", "dbus", "cron",
            "outpost", "systemd", "wg-quick", "network", "networking", "getty", "user", "default"}

# Units of the host that a service's unit of the same name would shadow in /etc/systemd/system.
RESERVED_NAMES = frozenset({
    "ssh", "sshd", "caddy", "haproxy", "nginx", "podman", "podman-auto-update", "dbus", "cron",
    "getty", "networking", "user", "default", "multi-user", "sockets", "timers", "basic", "sysinit",
    "network", "network-online", "unattended-upgrades", "apt-daily", "wg-quick", "restic", "init",
})
RESERVED_PREFIXES = ("systemd-", "outpost-", "user-", "podman-")

# Accounts a Debian host (12/13) has or gets from the packages outpost installs: base-passwd's
# static users, the system users of systemd, OpenSSH, podman, the proxies and common daemons.
# A service may not run as one of them, and the admin may not be one either (root above all).
SYSTEM_ACCOUNTS = frozenset({
    # base-passwd
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup",
    # systemd and its helpers
    "systemd-network", "systemd-resolve", "systemd-timesync", "systemd-journal",
    "systemd-journal-remote", "systemd-coredump", "systemd-oom", "messagebus", "polkitd",
    # what outpost and its packages bring
    "sshd", "caddy", "haproxy", "nginx", "containers", "dnsmasq", "tss", "uuidd", "tcpdump",
    "avahi", "avahi-autoipd", "colord", "statd", "postfix", "ntp", "ntpsec", "chrony", "unbound",
    "redis", "postgres", "mysql", "sudo", "admin", "operator", "adm", "staff", "users", "wheel",
    "shadow", "utmp", "tty", "disk", "kmem", "dialout", "cdrom", "floppy", "audio", "video",
    "plugdev", "netdev", "input", "render", "sgx", "kvm", "ssh", "crontab", "src", "voice", "fax",
    "tape", "sasl", "debian", "ubuntu", "cloud-user", "systemd-timesyncd",
})

# Where a file from `secret_files` or `artifacts` may never go: root's own controls (sudo, sshd,
# PAM, the account databases, cron), every directory systemd or podman read units from, and the
# agent's own program and state. A path equal to one of these or below it is refused.
FORBIDDEN_TARGETS = (
    "/etc/sudoers.d", "/etc/sudoers",
    "/etc/ssh", "/root",
    "/etc/pam.d", "/etc/security", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow",
    "/etc/subuid", "/etc/subgid", "/etc/cron.d", "/etc/cron.daily", "/etc/cron.hourly",
    "/etc/cron.weekly", "/etc/cron.monthly", "/etc/crontab", "/var/spool/cron",
    "/etc/ld.so.preload", "/etc/ld.so.conf.d", "/etc/profile.d", "/etc/environment",
    "/etc/apt", "/etc/modprobe.d", "/etc/polkit-1",
    # unit directories (system, user, generators, quadlets)
    "/etc/systemd", "/run/systemd", "/lib/systemd", "/usr/lib/systemd", "/usr/local/lib/systemd",
    "/etc/containers", "/usr/share/containers", "/usr/lib/containers",
    # the agent and its state
    "/usr/local/lib/outpost", "/var/lib/outpost", "/etc/outpost",
)
# Below any home directory: the user's own unit directories (the admin's home is refused whole).
FORBIDDEN_IN_HOME = (".config/systemd", ".config/containers", ".local/share/systemd")
