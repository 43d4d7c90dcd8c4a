"""The whole program under Pulumi's mocks, for every stack in the repository: the resource graph."""

import ipaddress
import json
import re

import pulumi
import pytest
import yaml

from components.program import run_program, stack_config
from tests.conftest import ROOT, STACKS
from tests.program.harness import bundle_commands, by_urn, manifests_of, of_type, registered

COMMAND = "command:remote:Command"
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_has_a_parent_under_the_component(stack):
    resources = registered(stack)
    top = [r for r in resources if r.type == "outpost:stack:Outpost"]
    assert len(top) == 1 and top[0].parent.endswith("pulumi:pulumi:Stack::outpost-" + stack)
    urns = by_urn(resources)
    for res in resources:
        if res is not top[0]:
            assert res.parent in urns, f"{res.name} is not parented inside the Outpost component"


@pytest.mark.parametrize("stack", STACKS)
def test_every_command_pins_the_host_key_and_keeps_secrets_on_stdin(stack):
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    secret_names = list(config.get("outpost:secrets", {}))
    commands = of_type(registered(stack), COMMAND)
    assert commands
    for cmd in commands:
        conn = cmd.inputs["connection"]
        assert conn["hostKey"].startswith("ssh-ed25519 "), cmd.name
        assert "connection" in cmd.secret_inputs, f"{cmd.name}: private key must be a secret"
        assert cmd.inputs["addPreviousOutputInEnv"] is False
        assert "environment" not in cmd.inputs
        for field in ("create", "delete"):
            text = cmd.inputs.get(field, "")
            assert "<secret:" not in text and not any(f"<secret:{n}>" in text for n in secret_names)
        stdin = cmd.inputs.get("stdin")
        if stdin and "<secret:" in stdin:
            assert "stdin" in cmd.secret_inputs, f"{cmd.name}: stdin carries secrets but is not secret"


@pytest.mark.parametrize("stack", STACKS)
def test_every_command_keeps_its_output_out_of_the_state_in_plaintext(stack):
    """stdout and stderr (the agent's log lines, a validator's error, the bootstrap's output) are
    secret outputs: encrypted in the state with the stack's passphrase, masked in the CLI."""
    commands = of_type(registered(stack), COMMAND)
    assert commands
    for cmd in commands:
        assert {"stdin", "stdout", "stderr"} <= set(cmd.additional_secret_outputs), cmd.name


@pytest.mark.parametrize("stack", [s for s in STACKS if s != "local"])
def test_every_server_has_its_firewall_at_creation(stack):
    resources = registered(stack)
    firewalls = {r.id: r for r in of_type(resources, FIREWALL)}
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    sources = config["outpost:admin"]["ssh_sources"]
    servers = of_type(resources, SERVER)
    assert servers
    for server in servers:
        ids = [str(int(i)) for i in server.inputs["firewallIds"]]
        assert len(ids) == 1 and ids[0] in firewalls, server.name
        rules = firewalls[ids[0]].inputs["rules"]
        ssh = [r for r in rules if r["port"] == "22"]
        assert ssh and all(set(r["sourceIps"]) <= set(sources) for r in ssh)
        assert all(r["direction"] == "in" for r in rules)
        assert {r["port"] for r in rules} <= {"22", "80", "443", "51820"}


def test_ssh_rule_is_no_wider_than_configured():
    narrow = dict(yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())["config"]["outpost:admin"],
                  ssh_sources=["198.51.100.7/32"])
    resources = registered("test", {"outpost:admin": narrow})
    for fw in of_type(resources, FIREWALL):
        ssh = [r for r in fw.inputs["rules"] if r["port"] == "22"]
        assert [r["sourceIps"] for r in ssh] == [["198.51.100.7/32"]]


def test_prod_is_protected_and_test_is_not():
    for stack, protected in (("prod", True), ("test", False)):
        resources = registered(stack)
        for res in of_type(resources, SERVER):
            assert res.protect is protected, (stack, res.name)
            assert res.inputs["deleteProtection"] is protected and res.inputs["rebuildProtection"] is protected
        for res in of_type(resources, "hcloud:index/network:Network") + of_type(resources, FIREWALL):
            assert res.protect is protected, (stack, res.name)


def test_hcloud_host_key_is_generated_and_injected():
    resources = registered("test")
    server = of_type(resources, SERVER)[0]
    key = next(r for r in resources if r.type == "tls:index/privateKey:PrivateKey" and r.name == "web1-host-key")
    assert key.inputs["algorithm"] == "ED25519"
    assert "userData" in server.secret_inputs
    user_data = server.inputs["userData"]
    assert user_data.startswith("#cloud-config\n")
    assert "disable_root: true" in user_data and "ssh_pwauth: false" in user_data
    pinned = {c.inputs["connection"]["hostKey"] for c in of_type(resources, COMMAND)}
    assert pinned == {key.outputs["public_key_openssh"].strip()}


def test_static_host_bootstraps_admin_as_first_login_user():
    resources = registered("prod")
    boot = next(r for r in resources if r.name == "vps1-bootstrap")
    bundle = bundle_commands(resources)["vps1"]
    assert boot.inputs["connection"]["user"] == "root" and bundle.inputs["connection"]["user"] == "admin"
    assert boot.urn in bundle.depends_on
    assert boot.ignore_changes == ["create"]


def test_placement_group_only_for_roles_with_several_servers():
    prod = of_type(registered("prod"), "hcloud:index/placementGroup:PlacementGroup")
    assert [p.name for p in prod] == ["placement-web"]
    assert not of_type(registered("test"), "hcloud:index/placementGroup:PlacementGroup")


def test_hcloud_network_attachment_uses_configured_addresses():
    resources = registered("prod")
    for server in of_type(resources, SERVER):
        nets = server.inputs["networks"]
        assert len(nets) == 1
        assert ipaddress.ip_address(nets[0]["ip"]) in ipaddress.ip_network("10.0.1.0/24")


def test_invalid_config_registers_nothing():
    config = stack_config("test")
    config["outpost:services"]["peerbook"]["hosts"] = ["nowhere"]
    with pytest.raises(pulumi.RunError) as info:
        run_program("test", config)
    assert str(info.value).startswith("Pulumi.test.yaml: outpost:services.peerbook.hosts[0]:")


def test_one_command_per_host_applies_base_then_certificates_then_proxy_backups_and_services():
    """Each host gets one Command (its bundle); its manifests apply in this order, the backups
    that restore data before the services that use it, after the static host's bootstrap."""
    resources = registered("local")
    commands = {r.name: r for r in of_type(resources, COMMAND)}
    assert sorted(commands) == ["vm-bootstrap", "vm-bundle"]
    bundle = commands["vm-bundle"]
    assert commands["vm-bootstrap"].urn in bundle.depends_on
    assert list(manifests_of(bundle)) == ["base", "tls", "proxy", "backup-wsgi-db", "backup-wsgi-state",
                                          "svc-hello", "svc-hello-refresh", "svc-wsgi"]
    # `create` names every manifest with its token, one line each: a preview shows which moved
    for name, manifest in manifests_of(bundle).items():
        assert re.search(rf"^#   {re.escape(name)} +[0-9a-f]{{20}}\b", bundle.inputs["create"], re.M), name
    for stack in STACKS:
        hosts = {r.name for r in of_type(registered(stack), "outpost:hosts:Host")}
        assert set(bundle_commands(registered(stack))) == hosts, stack


def test_internal_tls_is_a_stack_ca_and_keys_travel_only_as_secrets():
    resources = registered("local")
    ca = of_type(resources, "tls:index/selfSignedCert:SelfSignedCert")
    assert len(ca) == 1 and ca[0].inputs["isCaCertificate"] is True
    leaves = of_type(resources, "tls:index/locallySignedCert:LocallySignedCert")
    assert [leaf.name for leaf in leaves] == ["tls-hello.outpost.localhost"]
    assert leaves[0].inputs["earlyRenewalHours"] == 30 * 24
    bundle = bundle_commands(resources)["vm"]
    assert "stdin" in bundle.secret_inputs
    tls_files = json.dumps(manifests_of(bundle)["tls"]["files"])
    assert "<mock private key tls-hello.outpost.localhost-key>" in tls_files
    assert "private key" not in bundle.inputs["create"] + bundle.inputs["delete"]


def test_buckets_are_protected_in_prod_and_emptied_on_destroy_only_in_test():
    for stack, protected in (("prod", True), ("test", False)):
        buckets = [r for r in registered(stack) if r.type == "pulumi-python:dynamic/outpost:Bucket"]
        assert buckets, stack
        for bucket in buckets:
            assert bucket.protect is protected
            assert bucket.inputs["force_destroy"] is (not protected)
            assert {"access_key", "secret_key"} <= bucket.secret_inputs


def test_wireguard_mesh_peers_every_member_with_program_made_keys():
    import base64
    import json as _json

    from components.mesh import public_key

    resources = registered("prod")
    keys = {r.name: r for r in of_type(resources, "random:index/randomBytes:RandomBytes")}
    assert sorted(keys) == ["wireguard-mesh-vps1", "wireguard-mesh-web1", "wireguard-mesh-web2"]
    assert all(set(k.additional_secret_outputs) == {"base64", "hex"} for k in keys.values())
    confs = _mesh_configs(resources)
    assert sorted(confs) == ["vps1", "web1", "web2"]
    assert "stdin" in bundle_commands(resources)["web1"].secret_inputs
    conf = confs["web1"]
    web2_pub = public_key(keys["wireguard-mesh-web2"].outputs["base64"])
    assert f"PublicKey = {web2_pub}" in conf and len(base64.b64decode(web2_pub)) == 32
    assert "Endpoint = 203.0.113.10:51820" in conf and "AllowedIPs = 10.99.0.1/32" in conf
    assert f"PrivateKey = {keys['wireguard-mesh-web1'].outputs['base64']}" in conf
    firewalls = {r.name: r for r in of_type(resources, FIREWALL)}
    assert any(rule["protocol"] == "udp" and rule["port"] == "51820" for rule in firewalls["web1-firewall"].inputs["rules"])


def _mesh_configs(resources) -> dict[str, str]:
    """host → its WireGuard config, for the hosts whose bundle has the mesh's manifest."""
    return {host: manifests["net-mesh"]["files"][0]["content"]
            for host, cmd in bundle_commands(resources).items()
            if "net-mesh" in (manifests := manifests_of(cmd))}


def _peers(conf: str) -> list[str]:
    return sorted(line.split("=", 1)[1].strip() for line in conf.splitlines() if line.startswith("AllowedIPs"))


def test_wireguard_peers_follow_a_host_joining_and_leaving_the_mesh():
    """vps1 leaves the mesh: the other members drop its peer, keep their own keys (same key
    resources, same inputs: nothing regenerated) and vps1 gets no mesh command; a new static host
    joins: every member gains its peer and it gets a key of its own."""
    hosts = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["outpost:hosts"]
    before = registered("prod")
    assert _peers(_mesh_configs(before)["web1"]) == ["10.99.0.1/32", "10.99.0.3/32"]

    left = {**hosts, "vps1": {k: v for k, v in hosts["vps1"].items() if k != "networks"}}
    after = registered("prod", {"outpost:hosts": left})
    confs = _mesh_configs(after)
    assert sorted(confs) == ["web1", "web2"]
    assert _peers(confs["web1"]) == ["10.99.0.3/32"] and _peers(confs["web2"]) == ["10.99.0.2/32"]
    keys = lambda rs: {r.name: r.inputs for r in of_type(rs, "random:index/randomBytes:RandomBytes")}  # noqa: E731
    assert keys(after) == {n: i for n, i in keys(before).items() if n != "wireguard-mesh-vps1"}

    joined = {**hosts, "vps2": {**hosts["vps1"], "address": "198.51.100.20", "networks": {"mesh": "10.99.0.9"}}}
    confs = _mesh_configs(registered("prod", {"outpost:hosts": joined}))
    assert sorted(confs) == ["vps1", "vps2", "web1", "web2"]
    for name, conf in confs.items():
        assert ("AllowedIPs = 10.99.0.9/32" in conf) is (name != "vps2"), name
    assert "Endpoint = 198.51.100.20:51820" in confs["web1"]


def test_the_preview_says_which_removal_deletes_data():
    """`pulumi preview --diff` shows `create` (and `delete` for a Command that goes away): with
    purge, the manifest's line says plainly that removing it deletes the service's user and home,
    and so does the host's delete; without purge they don't."""
    bundle = bundle_commands(registered("local"))["vm"]
    line = next(x for x in bundle.inputs["create"].splitlines() if x.startswith("#   svc-hello "))
    assert line.endswith("  (purge: removing it DELETES user hello with its home /home/hello and their data)")
    assert "DELETES DATA" in bundle.inputs["delete"] and "#   svc-hello  (purge:" in bundle.inputs["delete"]
    for stack in (s for s in STACKS if s != "local"):
        for cmd in of_type(registered(stack), COMMAND):
            assert "DELETES" not in cmd.inputs["create"] + cmd.inputs.get("delete", ""), cmd.name


def test_a_service_whose_data_an_auto_backup_restores_applies_after_that_backup():
    """On a fresh host the backup's apply restores /home/kollektivkart/data before the
    container first starts: the bundle applies the backup first, and waits for its bucket."""
    resources = registered("test")
    web1 = bundle_commands(resources)["web1"]
    order = list(manifests_of(web1))
    assert order.index("backup-kollektivkart-data") < order.index("svc-kollektivkart")
    buckets = {r.urn for r in resources if r.type == "pulumi-python:dynamic/outpost:Bucket"}
    assert buckets and buckets <= set(web1.depends_on)


@pytest.mark.parametrize("stack", STACKS)
def test_the_agent_upload_follows_the_machine_behind_the_host(stack):
    """A host replaced by a new machine (new host key, another address or port: the disaster
    drill) gets the agent again: the upload's triggers hold the connection's identity, as the
    provider does not copy again on a changed connection alone."""
    uploads = of_type(registered(stack), "command:remote:CopyToRemote")
    assert uploads
    for upload in uploads:
        conn = upload.inputs["connection"]
        assert upload.inputs["triggers"] == [conn["host"], conn["port"], conn["hostKey"]], upload.name
