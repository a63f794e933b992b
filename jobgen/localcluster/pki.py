"""Certificates, service-account keys and kubeconfigs for the local control plane."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)
SERVICE_CLUSTER_IP = "10.96.0.1"
APISERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Identity:
    """A client identity: x509 CommonName is the user, Organizations the groups."""

    name: str  # file stem
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "jobgen-admin", ("system:masters",))
CONTROLLER_MANAGER = Identity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "jobgen-kwok", ("system:masters",))


def service_account_identity(namespace: str, name: str) -> Identity:
    """A client cert whose user name is the ServiceAccount's, so RBAC bindings to the SA apply."""
    return Identity(
        f"sa-{namespace}-{name}",
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    Path(path).chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _self_signed(name: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    """A builder for a certificate that ``name`` issues to itself, valid for VALIDITY."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class PKI:
    """Files under one directory; created once and reused by later starts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def cert(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def ensure(self, identities: tuple[Identity, ...], extra_ips: tuple[str, ...] = ()) -> None:
        """CA, SA keys, the apiserver's serving cert (also valid for `extra_ips`) and one client
        cert per identity; existing files are kept."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self._make_ca()
        if not (self.sa_key.exists() and self.sa_pub.exists()):
            key = _key()
            _write_key(self.sa_key, key)
            self.sa_pub.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        if not self.cert("apiserver").exists():
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in APISERVER_NAMES]
            sans += [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address(SERVICE_CLUSTER_IP)),
                *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
            ]
            self._issue("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
        for ident in identities:
            if not self.cert(ident.name).exists():
                self._issue(ident.name, _name(ident.user, ident.groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    def ensure_serving(self, stem: str, common_name: str, ips: tuple[str, ...], dns: tuple[str, ...] = ()) -> None:
        """A server certificate signed by the CA (e.g. the kubelet's, for the apiserver to verify)."""
        if self.cert(stem).exists():
            return
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        self._issue(stem, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def _make_ca(self) -> None:
        key = _key()
        cert = (
            _self_signed(_name("jobgen-local-ca"), key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key, key)
        _write_cert(self.ca_cert, cert)

    def _issue(
        self,
        stem: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> None:
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # ca_key is loaded from PEM as the union of every private key type; it is always RSA here
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        _write_key(self.key(stem), key)
        _write_cert(self.cert(stem), cert)

    def kubeconfig(self, path: Path, server: str, ident: Identity, context: str) -> Path:
        """Write a kubeconfig with embedded credentials for `ident`."""
        return write_kubeconfig(
            path,
            server=server,
            ca_pem=self.ca_cert.read_bytes(),
            context=context,
            user={
                "client-certificate-data": _b64(self.cert(ident.name).read_bytes()),
                "client-key-data": _b64(self.key(ident.name).read_bytes()),
            },
        )


def write_kubeconfig(path: Path, *, server: str, ca_pem: bytes, context: str, user: dict[str, str]) -> Path:
    """Write a one-context kubeconfig; `user` is the users[].user mapping (cert data or token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def self_signed_serving_pair(dns_name: str) -> tuple[bytes, bytes]:
    """A self-signed (cert, key) PEM pair for a webhook server nobody calls."""
    key = _key()
    cert = (
        _self_signed(_name(dns_name), key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
