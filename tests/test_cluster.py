"""Cluster files: the shipped examples, the device graph, overrides, and one-line errors on bad input."""

import pytest
import yaml

from hexserve.errors import SpecError
from hexserve.specs.cluster import cluster_from_gpus, load_cluster, parse_cluster
from hexserve.specs.examples import example_names
from hexserve.specs.gpus import lookup_device_type

BASELINE_PRICE = 29.52


@pytest.mark.parametrize("name", [f"hetero-{i}" for i in range(1, 6)])
def test_hetero_settings_cost_as_much_as_8_h100(name):
    cluster = load_cluster(name)
    assert abs(cluster.price_per_hour - BASELINE_PRICE) <= 0.03 * BASELINE_PRICE
    assert len(cluster.type_counts()) >= 3
    assert set(cluster.type_counts()) <= {"H100-SXM", "A100-80GB", "L40", "A6000"}


def test_hetero_settings_differ_from_one_another():
    mixes = {tuple(sorted(load_cluster(f"hetero-{i}").type_counts().items())) for i in range(1, 6)}
    assert len(mixes) == 5


def test_shipped_baselines_and_special_cases():
    assert load_cluster("h100x8").price_per_hour == pytest.approx(29.52)
    assert abs(load_cluster("hetero-70pct").price_per_hour - 20.66) <= 0.03 * 20.66
    case = load_cluster("hexgen-case")
    assert case.type_counts() == {"A6000": 4, "A5000": 2, "A4000": 2}
    assert len(case.nodes) == 1 and case.nodes[0].intra_link.kind == "pcie4"
    big = load_cluster("hetero-64")
    assert len(big.devices) == 64 and len(big.type_counts()) == 4 and len(big.nodes) >= 8
    cpu = load_cluster("cpu-local")
    assert len(cpu.devices) == 4 and all(d.type.is_cpu for d in cpu.devices)


def test_every_shipped_cluster_loads():
    names = example_names("clusters")
    assert {"h100x8", "hexgen-case", "hetero-64", "cpu-local"} <= set(names)
    for name in names:
        assert load_cluster(name).devices


def test_graph_has_every_pair_with_its_link():
    cluster = load_cluster("hetero-4")
    g = cluster.graph()
    n = len(cluster.devices)
    assert g.number_of_nodes() == n and g.number_of_edges() == n * (n - 1) // 2
    by_node = {node.name: node.devices for node in cluster.nodes}
    h100, a100, l40 = by_node["h100-node"][0], by_node["a100-node"][0], by_node["l40-node"][0]
    assert g.edges[h100.index, by_node["h100-node"][1].index]["bandwidth"] == 450e9  # NVLink 4 inside
    assert g.edges[h100.index, a100.index]["bandwidth"] == 50e9  # the IB NDR pair override
    assert g.edges[h100.index, l40.index]["bandwidth"] == 12.5e9  # the Ethernet default
    assert g.edges[h100.index, l40.index]["latency"] == pytest.approx(30e-6)


def test_slowest_link_of_a_group_spanning_nodes():
    cluster = load_cluster("hetero-4")
    by_node = {node.name: node.devices for node in cluster.nodes}
    group = [*by_node["h100-node"], by_node["l40-node"][0]]
    link = cluster.slowest_link(group)
    assert link.bandwidth_gbps == 12.5 and link.latency_us == 30
    assert cluster.slowest_link(group[:1]) is None


def test_aliases_and_overrides():
    for alias in ("h100", "H100-SXM", "h100 sxm", "H100_SXM"):
        assert lookup_device_type(alias).name == "H100-SXM"
    assert lookup_device_type("a100-80gb").name == "A100-80GB"
    assert lookup_device_type("rtx-a6000").name == "A6000"
    cluster = parse_cluster({
        "name": "x",
        "nodes": [{"name": "n", "gpus": [{"type": "l40", "count": 2, "memory_gib": 40, "price_per_hour": 2.5}],
                   "intra_link": {"kind": "pcie4", "bandwidth_gbps": 20}}],
    })
    d = cluster.devices[0]
    assert d.type.memory_gib == 40 and d.type.tflops == 181 and cluster.price_per_hour == 5.0
    assert cluster.nodes[0].intra_link.bandwidth_gbps == 20 and cluster.nodes[0].intra_link.latency_us == 8


def test_gpus_string_builds_one_node():
    cluster = cluster_from_gpus("2xa100-80gb,1xl40")
    assert [d.type.name for d in cluster.devices] == ["A100-80GB", "A100-80GB", "L40"]
    assert cluster_from_gpus("8xh100").nodes[0].intra_link.kind == "nvlink4"


def _node(**extra):
    return {"name": "n0", "gpus": [{"type": "a6000", "count": 2}], **extra}


BAD = [
    ({"name": "c", "nodes": [{"name": "n0", "gpus": [{"type": "h1000"}]}]},
     r"nodes\[0\]\.gpus\[0\]\.type: unknown device type 'h1000'; known types: H200-SXM, H100-SXM"),
    ({"name": "c", "nodes": [_node(intra_link={"latency_us": 3})]},
     r"nodes\[0\]\.intra_link: missing bandwidth: give bandwidth_gbps"),
    ({"name": "c", "nodes": [_node(intra_link={"bandwidth_gbps": -5})]},
     r"nodes\[0\]\.intra_link\.bandwidth_gbps: input should be greater than 0"),
    ({"name": "c", "nodes": [{"name": "n0", "gpus": []}]},
     r"nodes\[0\]\.gpus: list should have at least 1 item"),
    ({"name": "c", "nodes": [{"name": "n0"}]}, r"nodes\[0\]\.gpus: required field is missing"),
    ({"name": "c", "nodes": [_node(bandwith_gbps=3)]}, r"nodes\[0\]\.bandwith_gbps: unknown field"),
    ({"name": "c", "nodes": [_node(), _node()], "inter_node": {"default": {"kind": "ib-hdr"}}},
     r"node name 'n0' appears twice"),
    ({"name": "c", "nodes": [_node(), dict(_node(), name="n1")]}, r"inter_node: a cluster of several nodes"),
    ({"name": "c", "nodes": [_node(), dict(_node(), name="n1")],
      "inter_node": {"default": {"kind": "ib-hdr"}, "pairs": [{"between": ["n0", "n9"], "kind": "ib-ndr"}]}},
     r"inter_node\.pairs\[0\]\.between: no node named 'n9'"),
    ({"name": "c", "nodes": [_node(intra_link={"kind": "nvlink9"})]},
     r"nodes\[0\]\.intra_link\.kind: unknown link kind 'nvlink9'; known kinds: nvlink4"),
    ({"name": "c", "nodes": [{"name": "n0", "gpus": [{"type": "cpu", "count": 2}]}]},
     r"nodes\[0\]\.gpus\[0\]\.memory_gib: a cpu device has no catalogue default"),
]


@pytest.mark.parametrize("data,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_cluster_gives_one_line_naming_the_field(data, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_cluster(data)
    assert "\n" not in str(info.value)


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nnodes:\n  - name: [n0\n")
    with pytest.raises(SpecError, match=r"malformed YAML at line \d+"):
        load_cluster(str(path))


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "nodes": [_node()]}))
    assert load_cluster(str(path)).name == "mine"


def test_unknown_cluster_name_lists_shipped_ones():
    with pytest.raises(SpecError, match="hetero-1"):
        load_cluster("no-such-cluster")
