"""Kubernetes NetworkPolicy semantics, evaluated offline over a rendered overlay.

A connection from one pod to another (or to an address outside the cluster) is allowed when both ends let it
through: every policy of the source's namespace whose podSelector selects the source and whose types include
Egress must, together, have a rule that matches the destination and port (no such policy: egress is open),
and likewise for Ingress at the destination. Namespaces outside the overlay (kube-system, kubeflow) have
policies this project does not ship, so only the overlay's side of a connection to them is checked.

Ports are the destination pod's ports: a policy sees a connection after a Service has forwarded it, so a
Service port (seaweedfs:9000) must be written as the pod port it targets (8333). `ipBlock` peers match only
addresses outside the cluster here (whether a CNI matches pod IPs against them varies), and
`matchExpressions` selectors are refused rather than guessed at.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

METADATA_NAME = "kubernetes.io/metadata.name"  # set by the API server on every namespace


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace, labels, its namespace's labels) or an outside address."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    address: str | None = None

    def __str__(self) -> str:
        if self.address is not None:
            return self.address
        selector = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.namespace} pods {selector or '(any)'}"


def namespace_labels(docs: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """The labels of `namespace` as the overlay creates it, plus the one the API server always sets."""
    doc = next(
        (d for d in docs if d["kind"] == "Namespace" and d["metadata"]["name"] == namespace),
        None,
    )
    return {**((doc or {}).get("metadata", {}).get("labels") or {}), METADATA_NAME: namespace}


def pod(docs: list[dict[str, Any]], namespace: str, labels: dict[str, str]) -> Peer:
    return Peer(namespace, dict(labels), namespace_labels(docs, namespace))


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if selector.get("matchExpressions"):
        raise AssertionError(f"matchExpressions are not handled by the contract check: {selector}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    return list(spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else [])))


def _peer_matches(rule_peer: dict[str, Any], policy_namespace: str, other: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if other.address is None:
            return False
        address = ipaddress.ip_address(other.address)
        block = rule_peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        in_namespace = matches(rule_peer["namespaceSelector"], other.namespace_labels)
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and matches(rule_peer.get("podSelector", {}), other.labels)


def _port_matches(rule: dict[str, Any], port: int, port_name: str | None, protocol: str) -> bool:
    ports = rule.get("ports") or []
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None or value in (port, port_name):
            return True
        end = entry.get("endPort")
        if end is not None and isinstance(value, int) and value <= port <= end:
            return True
    return False


def _selecting(docs: list[dict[str, Any]], end: Peer, kind: str) -> list[dict[str, Any]]:
    return [
        p
        for p in docs
        if p["kind"] == "NetworkPolicy"
        and p["metadata"].get("namespace") == end.namespace
        and kind in policy_types(p)
        and matches(p["spec"].get("podSelector", {}), end.labels)
    ]


def refusal(
    docs: list[dict[str, Any]],
    source: Peer,
    destination: Peer,
    port: int,
    protocol: str = "TCP",
    port_name: str | None = None,
) -> str | None:
    """None when the overlay's NetworkPolicies let `source` connect to `destination` on `port`; else which
    side refuses and the policies that select it."""
    if source.namespace is not None:
        egress = _selecting(docs, source, "Egress")
        if egress and not any(
            _port_matches(rule, port, port_name, protocol)
            and (
                not rule.get("to") or any(_peer_matches(p, source.namespace, destination) for p in rule["to"])
            )
            for policy in egress
            for rule in policy["spec"].get("egress") or []
        ):
            names = ", ".join(p["metadata"]["name"] for p in egress)
            return (
                f"the egress policies of {source.namespace} ({names}) allow no {protocol} {port} "
                f"to {destination}"
            )
    if destination.namespace is not None:
        ingress = _selecting(docs, destination, "Ingress")
        if ingress and not any(
            _port_matches(rule, port, port_name, protocol)
            and (
                not rule.get("from")
                or any(_peer_matches(p, destination.namespace, source) for p in rule["from"])
            )
            for policy in ingress
            for rule in policy["spec"].get("ingress") or []
        ):
            names = ", ".join(p["metadata"]["name"] for p in ingress)
            return (
                f"the ingress policies of {destination.namespace} ({names}) admit no {protocol} {port} "
                f"from {source}"
            )
    return None
