//! `cairn tls ca create` and `cairn tls cert create`: the built-in certificate authority of
//! `consul tls`, for agent TLS (not Connect). Files are written into the current directory under
//! Consul's names (`consul-agent-ca.pem`, `dc1-server-consul-0.pem`, ...) with Consul's contents:
//! ECDSA P-256 keys as SEC1 `EC PRIVATE KEY` PEM (what Consul writes and what its
//! `tls cert create` insists on reading), a CA whose subject is HashiCorp's address block, and leaf
//! certificates whose names and usages are those Consul's agents check.
//!
//! rcgen builds and signs the certificates and reads an existing CA back (x509-parser); the `pem`
//! crate reads and writes PEM. The one thing done here by hand is re-wrapping EC keys between
//! PKCS#8 (what ring speaks) and SEC1 (what Consul writes), a fixed structure of a few elements.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, GeneralSubtree,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};

use super::keygen::random_bytes;

#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// Helpers for CAs.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Helpers for certificates.
    Cert {
        #[command(subcommand)]
        cmd: CertCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Create a new consul CA.
    Create(CaCreateArgs),
}

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Create a new certificate.
    Create(CertCreateArgs),
}

#[derive(Args, Debug)]
pub struct CaCreateArgs {
    /// Provide number of days the CA is valid for from now on. Defaults to 5 years.
    #[arg(long, default_value_t = 1825)]
    pub days: i64,
    /// Domain of consul cluster. Only used in combination with -name-constraint. Defaults to consul.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// Add name constraints for the CA: only -domain, localhost and -additional-name-constraint
    /// are then allowed in the certificates it signs. Defaults to false.
    #[arg(long = "name-constraint")]
    pub name_constraint: bool,
    /// Add name constraints for the CA. Can be used multiple times. Only used in combination
    /// with -name-constraint.
    #[arg(long = "additional-name-constraint", action = clap::ArgAction::Append)]
    pub additional_name_constraint: Vec<String>,
    /// ClusterID of the consul cluster, requires -domain to be set as well. When used will set
    /// URIs with spiffeid.
    #[arg(long = "cluster-id")]
    pub cluster_id: Option<String>,
    /// Common Name of CA. Defaults to Consul Agent CA.
    #[arg(long = "common-name")]
    pub common_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct CertCreateArgs {
    /// Provide path to the ca. Defaults to #DOMAIN#-agent-ca.pem.
    #[arg(long, default_value = "#DOMAIN#-agent-ca.pem")]
    pub ca: String,
    /// Provide path to the key. Defaults to #DOMAIN#-agent-ca-key.pem.
    #[arg(long, default_value = "#DOMAIN#-agent-ca-key.pem")]
    pub key: String,
    /// Generate server certificate.
    #[arg(long)]
    pub server: bool,
    /// Generate client certificate.
    #[arg(long)]
    pub client: bool,
    /// Generate cli certificate.
    #[arg(long)]
    pub cli: bool,
    /// When generating a server cert and this is set an additional dns name is included of the
    /// form <node>.server.<datacenter>.<domain>.
    #[arg(long)]
    pub node: Option<String>,
    /// Provide number of days the certificate is valid for from now on. Defaults to 1 year.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Provide the datacenter. Matters only for -server certificates. Defaults to dc1.
    #[arg(long, default_value = "dc1")]
    pub dc: String,
    /// Provide the domain. Matters only for -server certificates.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// Provide an additional dnsname for Subject Alternative Names. localhost is always included.
    /// This flag may be provided multiple times.
    #[arg(long = "additional-dnsname", action = clap::ArgAction::Append)]
    pub additional_dnsname: Vec<String>,
    /// Provide an additional ipaddress for Subject Alternative Names. 127.0.0.1 is always
    /// included. This flag may be provided multiple times.
    #[arg(long = "additional-ipaddress", action = clap::ArgAction::Append)]
    pub additional_ipaddress: Vec<String>,
}

/// Runs a `cairn tls` command in the current directory; returns the exit code.
pub fn run(cmd: TlsCmd) -> Result<i32> {
    let here = Path::new(".");
    match cmd {
        TlsCmd::Ca { cmd: CaCmd::Create(a) } => ca_create(here, a),
        TlsCmd::Cert { cmd: CertCmd::Create(a) } => cert_create(here, a),
    }
}

/// Consul prints its `tls` failures bare (no "Error! " prefix) on stderr and exits 1.
fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("{msg}");
    1
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
}

// ---------------------------------------------------------------------------------------------
// tls ca create

/// `tls ca create`, writing into `dir` (the current directory outside tests). File names are
/// printed relative to `dir`, as Consul prints them.
fn ca_create(dir: &Path, a: CaCreateArgs) -> Result<i32> {
    let cert_file = format!("{}-agent-ca.pem", a.domain);
    let key_file = format!("{}-agent-ca-key.pem", a.domain);
    // The certificate is checked first, then the key: Consul's order, so its message.
    for f in [&cert_file, &key_file] {
        if !does_not_exist(&dir.join(f)) {
            return Ok(fail(format_args!("{f} already exists.")));
        }
    }
    let constraints: Vec<String> = if a.name_constraint {
        // Consul appends the domain and localhost after the additional constraints.
        a.additional_name_constraint.iter().cloned().chain([a.domain.clone(), "localhost".to_owned()]).collect()
    } else {
        Vec::new()
    };
    let uri = a.cluster_id.as_deref().filter(|c| !c.is_empty()).map(|c| format!("spiffe://{c}.{}", a.domain));
    let common_name = a.common_name.as_deref().filter(|c| !c.is_empty());
    let ca = match generate_ca(a.days, common_name, uri, &constraints) {
        Ok(ca) => ca,
        Err(e) => return Ok(fail(format_args!("{e:#}"))),
    };
    if let Err(e) = write_new(dir, &cert_file, &ca.cert_pem, 0o666) {
        return Ok(fail(e));
    }
    println!("==> Saved {cert_file}");
    if let Err(e) = write_new(dir, &key_file, &ca.key_pem, 0o600) {
        return Ok(fail(e));
    }
    println!("==> Saved {key_file}");
    Ok(0)
}

/// Makes a self-signed agent CA as Consul's `tlsutil.GenerateCA` does: a new P-256 key, a random
/// 128-bit serial, Consul's subject with CN `Consul Agent CA <serial in decimal>` unless
/// `common_name` is given, CA basic constraints without a path length, key usages
/// CertSign|CRLSign|DigitalSignature, valid from now for `days` days, with matching subject and
/// authority key identifiers, an optional SPIFFE URI SAN, and (when `permitted_dns` is not
/// empty) critical permitted-DNS name constraints.
pub fn generate_ca(
    days: i64,
    common_name: Option<&str>,
    uri: Option<String>,
    permitted_dns: &[String],
) -> Result<Generated> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("error generating private key")?;
    let serial = u128::from_be_bytes(random_bytes::<16>()?);
    let name = common_name.map_or_else(|| format!("Consul Agent CA {serial}"), str::to_owned);

    // `new` with no names rather than `default()`: every field that matters is set below.
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    // The order of Go's pkix.Name.ToRDNSequence, so the subject reads as Consul's does.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, dn_string("US"));
    dn.push(DnType::StateOrProvinceName, dn_string("CA"));
    dn.push(DnType::LocalityName, dn_string("San Francisco"));
    dn.push(DnType::CustomDnType(OID_STREET_ADDRESS.to_vec()), dn_string("101 Second Street"));
    dn.push(DnType::CustomDnType(OID_POSTAL_CODE.to_vec()), dn_string("94105"));
    dn.push(DnType::OrganizationName, dn_string("HashiCorp Inc."));
    dn.push(DnType::CommonName, dn_string(&name));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (p.not_before, p.not_after) = validity(days)?;
    // Consul sets AuthorityKeyId = SubjectKeyId on its self-signed CA. rcgen derives both from
    // the same key with the same method (a truncated SHA-256 of the public key info; Consul
    // uses the full 32 bytes, which only the value's length tells apart).
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    if let Some(uri) = uri {
        p.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri)?)];
    }
    if !permitted_dns.is_empty() {
        // rcgen always marks the extension critical, as Consul asks (PermittedDNSDomainsCritical).
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted_dns.iter().cloned().map(GeneralSubtree::DnsName).collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    let cert = p.self_signed(&key).context("error generating CA certificate")?;
    Ok(Generated { cert_pem: pem_encode("CERTIFICATE", cert.der()), key_pem: key_pem(&key)? })
}

// ---------------------------------------------------------------------------------------------
// tls cert create

/// `tls cert create`, in `dir` (see [`ca_create`]), with Consul's checks in Consul's order.
fn cert_create(dir: &Path, a: CertCreateArgs) -> Result<i32> {
    if a.ca.is_empty() {
        return Ok(fail("Please provide the ca"));
    }
    if a.key.is_empty() {
        return Ok(fail("Please provide the key"));
    }
    if [a.server, a.client, a.cli].iter().filter(|b| **b).count() != 1 {
        return Ok(fail("Please provide either -server, -client, or -cli"));
    }
    let node = a.node.as_deref().filter(|n| !n.is_empty());
    if node.is_some() && !a.server {
        return Ok(fail("-node requires -server"));
    }

    let mut dns_names: Vec<String> =
        a.additional_dnsname.iter().map(|d| d.trim()).filter(|d| !d.is_empty()).map(str::to_owned).collect();
    let mut ips = Vec::new();
    for i in a.additional_ipaddress.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        // Go's net.ParseIP would turn a bad address into an empty SAN; refusing is kinder.
        match i.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip.to_canonical()),
            Err(_) => return Ok(fail(format_args!("Invalid IP address: {i}"))),
        }
    }
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let (kind, name, ext_key_usages) = if a.server {
        let name = format!("server.{}.{}", a.dc, a.domain);
        if let Some(node) = node {
            dns_names.push(format!("{node}.server.{}.{}", a.dc, a.domain));
        }
        dns_names.extend([name.clone(), "localhost".to_owned()]);
        ips.push(localhost);
        ("server", name, vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth])
    } else if a.client {
        let name = format!("client.{}.{}", a.dc, a.domain);
        dns_names.extend([name.clone(), "localhost".to_owned()]);
        ips.push(localhost);
        ("client", name, vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth])
    } else {
        // A cli certificate names only itself and localhost; extra DNS names are dropped (as
        // Consul does), extra IPs kept, and it carries no extended key usage.
        let name = format!("cli.{}.{}", a.dc, a.domain);
        dns_names = vec![name.clone(), "localhost".to_owned()];
        ("cli", name, Vec::new())
    };
    let prefix = format!("{}-{kind}-{}", a.dc, a.domain);

    let Some((cert_file, key_file)) = (0..=10_000).find_map(|i| {
        let c = format!("{prefix}-{i}.pem");
        let k = format!("{prefix}-{i}-key.pem");
        (does_not_exist(&dir.join(&c)) && does_not_exist(&dir.join(&k))).then_some((c, k))
    }) else {
        return Ok(fail("Could not find a filename that doesn't already exist"));
    };

    let ca_file = a.ca.replacen("#DOMAIN#", &a.domain, 1);
    let ca_key_file = a.key.replacen("#DOMAIN#", &a.domain, 1);
    let ca_pem = match read_file(&dir.join(&ca_file), &ca_file) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return Ok(fail(format_args!("Error reading CA: {e}"))),
    };
    let ca_key_pem = match read_file(&dir.join(&ca_key_file), &ca_key_file) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return Ok(fail(format_args!("Error reading CA key: {e}"))),
    };

    if a.server {
        println!(
            "==> WARNING: Server Certificates grants authority to become a
    server and access all state in the cluster including root keys
    and all ACL tokens. Do not distribute them to production hosts
    that are not server nodes. Store them as securely as CA keys."
        );
    }
    println!("==> Using {ca_file} and {ca_key_file}");

    let signer = match parse_signer(&ca_key_pem) {
        Ok(k) => k,
        Err(e) => return Ok(fail(format_args!("{e:#}"))),
    };
    let spec = LeafSpec { name, days: a.days, dns_names, ip_addresses: ips, ext_key_usages };
    let leaf = match generate_cert(signer, &ca_pem, &spec) {
        Ok(l) => l,
        Err(e) => return Ok(fail(format_args!("{e:#}"))),
    };
    if let Err(e) = write_new(dir, &cert_file, &leaf.cert_pem, 0o666) {
        return Ok(fail(e));
    }
    println!("==> Saved {cert_file}");
    // Private keys are for the owner only (Consul's CA key is 0600; the leaf key deserves no less).
    if let Err(e) = write_new(dir, &key_file, &leaf.key_pem, 0o600) {
        return Ok(fail(e));
    }
    println!("==> Saved {key_file}");
    Ok(0)
}

/// What goes into a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The subject's common name (`server.dc1.consul`).
    pub name: String,
    pub days: i64,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub ext_key_usages: Vec<ExtendedKeyUsagePurpose>,
}

/// Signs a new leaf certificate (with a new P-256 key) by the CA in `ca_pem`, whose key is
/// `signer`, as Consul's `tlsutil.GenerateCert`: subject CN only, `CA:FALSE`, key usages
/// DigitalSignature|KeyEncipherment, the given SANs and extended usages, a random serial, and the
/// CA's subject key identifier as authority key identifier.
///
/// Consul then verifies the new certificate against the CA; the checks that can fail here
/// (a key that is not the CA's, names outside the CA's name constraints) are made first instead.
pub fn generate_cert(signer: KeyPair, ca_pem: &str, spec: &LeafSpec) -> Result<Generated> {
    let ca = parse_ca(ca_pem).context("failed to parse CA")?;
    if signer.public_key_raw() != ca.public_key.as_slice() {
        bail!("x509: certificate signed by unknown authority (the CA key does not belong to the CA certificate)");
    }
    check_name_constraints(&ca, &spec.dns_names)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("failed to generate private key")?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.serial_number = Some(SerialNumber::from_slice(&random_bytes::<16>()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dn_string(&spec.name));
    p.distinguished_name = dn;
    // BasicConstraintsValid with IsCA false: an explicit, critical `CA:FALSE`.
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = spec.ext_key_usages.clone();
    (p.not_before, p.not_after) = validity(spec.days)?;
    // Go writes DNS names before IP addresses in the SAN extension.
    let mut sans = Vec::with_capacity(spec.dns_names.len() + spec.ip_addresses.len());
    for d in &spec.dns_names {
        let ia5 = Ia5String::try_from(d.as_str())
            .map_err(|_| anyhow!("failed to create certificate: x509: {d:?} cannot be encoded as an IA5String"))?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    p.subject_alt_names = sans;
    p.key_identifier_method = KeyIdMethod::Sha256;
    // Go copies the CA's SubjectKeyId into the leaf's AuthorityKeyId, and omits it when the CA
    // has none; PreSpecified reproduces the CA's value byte for byte, whoever made the CA.
    p.use_authority_key_identifier_extension = ca.has_skid;

    // The issuer as rcgen reads it from the CA: its subject (each value keeping its string type,
    // so chains match by name byte for byte) and its key identifier.
    let issuer = Issuer::from_ca_cert_der(&ca.der.as_slice().into(), signer).context("failed to parse CA")?;
    let cert = p.signed_by(&key, &issuer).context("failed to create certificate")?;
    Ok(Generated { cert_pem: pem_encode("CERTIFICATE", cert.der()), key_pem: key_pem(&key)? })
}

/// Go's `matchDomainConstraint`-based check of DNS names against the CA's DNS name constraints,
/// with the message `x509.Certificate.Verify` gives.
fn check_name_constraints(ca: &CaInfo, dns_names: &[String]) -> Result<()> {
    const PREFIX: &str = "x509: a root or intermediate certificate is not authorized to sign for this name";
    for name in dns_names {
        if let Some(c) = ca.excluded_dns.iter().find(|c| domain_matches(name, c)) {
            bail!("{PREFIX}: DNS name {name:?} is excluded by constraint {c:?}");
        }
        if !ca.permitted_dns.is_empty() && !ca.permitted_dns.iter().any(|c| domain_matches(name, c)) {
            bail!("{PREFIX}: DNS name {name:?} is not permitted by any constraint");
        }
    }
    Ok(())
}

/// Whether `domain` falls under the DNS constraint `constraint`: equal to it or below it, label
/// by label, ignoring case; a leading dot asks for a strict subdomain; empty matches everything.
fn domain_matches(domain: &str, constraint: &str) -> bool {
    if constraint.is_empty() {
        return true;
    }
    let (constraint, must_be_below) = match constraint.strip_prefix('.') {
        Some(c) => (c, true),
        None => (constraint, false),
    };
    let d: Vec<&str> = domain.trim_end_matches('.').split('.').rev().collect();
    let c: Vec<&str> = constraint.split('.').rev().collect();
    if d.len() < c.len() || (must_be_below && d.len() == c.len()) {
        return false;
    }
    c.iter().zip(&d).all(|(c, d)| c.eq_ignore_ascii_case(d))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Go's `tls.FileDoesNotExist`: only "not found" counts as absent; any other stat error (a
/// permission problem, say) counts as present, so nothing is overwritten by accident.
fn does_not_exist(p: &Path) -> bool {
    matches!(std::fs::metadata(p), Err(e) if e.kind() == ErrorKind::NotFound)
}

/// The validity window: from now for `days` days (negative allowed, as in Go), in UTC.
fn validity(days: i64) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    let end = days
        .checked_mul(86_400)
        .and_then(|secs| now.checked_add(time::Duration::seconds(secs)))
        // X.509 times are four-digit years; past that the encoders would fail or panic.
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(|| anyhow!("-days {days} is out of range"))?;
    Ok((now, end))
}

/// A directory-string value as Go's asn1 encodes a plain string: PrintableString when every
/// character allows it, else UTF8String. Re-encoding a Consul CA's subject then gives the same
/// bytes as the issuer of the certificates it signs.
fn dn_string(s: &str) -> DnValue {
    match PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_owned()),
    }
}

/// Go's `ioutil.ReadFile` error text: `open <path>: no such file or directory`.
fn read_file(path: &Path, shown: &str) -> std::result::Result<Vec<u8>, String> {
    let mut f = File::open(path).map_err(|e| go_io_error("open", shown, &e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| go_io_error("read", shown, &e))?;
    Ok(buf)
}

/// Creates `dir/name` (which must not exist: `create_new` rather than Consul's write-and-rename,
/// so a file that appeared since the check is not clobbered) with `mode` (less the umask).
fn write_new(dir: &Path, name: &str, contents: &str, mode: u32) -> std::result::Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dir.join(name))
        .map_err(|e| go_io_error("open", name, &e))?;
    f.write_all(contents.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| go_io_error("write", name, &e))
}

/// An I/O error as Go's `*PathError` prints it: `<op> <path>: <lower-case reason>`.
fn go_io_error(op: &str, path: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    let reason = text.find(" (os error").map_or(text.as_str(), |i| &text[..i]);
    let mut chars = reason.chars();
    let reason: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{op} {path}: {reason}")
}

// ---------------------------------------------------------------------------------------------
// PEM

/// Encodes one PEM block the way Go's `pem.Encode` does (64-column base64, LF line ends).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let cfg = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), cfg)
}

/// The first PEM block in `text`, as Go's `pem.Decode` finds it: its label and bytes.
fn pem_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let p = pem::parse(text).ok()?;
    Some((p.tag().to_owned(), p.into_contents()))
}

// ---------------------------------------------------------------------------------------------
// Keys

/// `id-ecPublicKey` (1.2.840.10045.2.1), a whole DER element.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// The PKCS#8 algorithm identifier of an RSA key: `rsaEncryption` with NULL parameters.
const RSA_ALGORITHM_ID: &[u8] =
    &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
/// X.520 streetAddress (2.5.4.9) and postalCode (2.5.4.17), which rcgen has no names for.
const OID_STREET_ADDRESS: &[u64] = &[2, 5, 4, 9];
const OID_POSTAL_CODE: &[u64] = &[2, 5, 4, 17];

/// The private key as Consul writes it: SEC1 `EC PRIVATE KEY` (Go's `x509.MarshalECPrivateKey`).
/// rcgen (with ring) only speaks PKCS#8, so the key is re-wrapped.
fn key_pem(key: &KeyPair) -> Result<String> {
    Ok(pem_encode("EC PRIVATE KEY", &pkcs8_to_sec1(key.serialized_der())?))
}

/// Reads a CA key as Consul's `connect.ParseSigner` does: SEC1 `EC PRIVATE KEY`, PKCS#1
/// `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`, with its error texts. ring loads only PKCS#8, so the
/// other two are re-wrapped first.
fn parse_signer(pem: &str) -> Result<KeyPair> {
    let Some((label, bytes)) = pem_decode(pem) else {
        bail!("no PEM-encoded data found");
    };
    let pkcs8 = match label.as_str() {
        "EC PRIVATE KEY" => sec1_to_pkcs8(&bytes).context("x509: failed to parse EC private key")?,
        "RSA PRIVATE KEY" => {
            // PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo.
            let mut body = der::INTEGER_ZERO.to_vec();
            body.extend_from_slice(RSA_ALGORITHM_ID);
            body.extend(der::tlv(der::OCTET_STRING, &bytes));
            der::tlv(der::SEQUENCE, &body)
        }
        "PRIVATE KEY" => bytes,
        other => bail!("unknown PEM block type for signing key: {other}"),
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| anyhow!("failed to parse the {label}: {e}"))
}

/// PKCS#8 `PrivateKeyInfo` of an EC key to SEC1 `ECPrivateKey` with the curve named in `[0]`, as
/// Go and OpenSSL write standalone EC keys (RFC 5915 asks for the parameters there).
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Result<Vec<u8>> {
    let top = der::single(pkcs8, der::SEQUENCE)?;
    let parts = der::children(top.body)?;
    let [_version, alg, key] = parts.as_slice() else {
        bail!("unexpected PKCS#8 structure");
    };
    let alg_parts = der::children(alg.body)?;
    let [alg_oid, curve] = alg_parts.as_slice() else {
        bail!("unexpected PKCS#8 algorithm identifier");
    };
    if alg_oid.raw != OID_EC_PUBLIC_KEY || curve.tag != der::OID || key.tag != der::OCTET_STRING {
        bail!("not an EC private key");
    }
    let inner = der::single(key.body, der::SEQUENCE)?;
    let fields = der::children(inner.body)?;
    let (Some(version), Some(private)) = (fields.first(), fields.get(1)) else {
        bail!("unexpected EC private key structure");
    };
    let public = fields.iter().find(|f| f.tag == der::CONTEXT_1).context("EC private key without its public key")?;
    let mut body = version.raw.to_vec();
    body.extend_from_slice(private.raw);
    body.extend(der::tlv(der::CONTEXT_0, curve.raw));
    body.extend_from_slice(public.raw);
    Ok(der::tlv(der::SEQUENCE, &body))
}

/// SEC1 `ECPrivateKey` to the PKCS#8 form ring loads: the curve moves from `[0]` into the
/// algorithm identifier, and the inner key keeps version, private scalar and public key, exactly
/// the layout ring itself generates.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>> {
    let top = der::single(sec1, der::SEQUENCE)?;
    let fields = der::children(top.body)?;
    let (Some(version), Some(private)) = (fields.first(), fields.get(1)) else {
        bail!("unexpected structure");
    };
    if version.tag != der::INTEGER || private.tag != der::OCTET_STRING {
        bail!("unexpected structure");
    }
    let params = fields.iter().find(|f| f.tag == der::CONTEXT_0).context("unknown elliptic curve")?;
    let curve = der::single(params.body, der::OID)?;
    let public = fields.iter().find(|f| f.tag == der::CONTEXT_1).context("the public key is missing")?;
    let mut inner = version.raw.to_vec();
    inner.extend_from_slice(private.raw);
    inner.extend_from_slice(public.raw);
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(curve.raw);
    let mut body = der::INTEGER_ZERO.to_vec();
    body.extend(der::tlv(der::SEQUENCE, &alg));
    body.extend(der::tlv(der::OCTET_STRING, &der::tlv(der::SEQUENCE, &inner)));
    Ok(der::tlv(der::SEQUENCE, &body))
}

// ---------------------------------------------------------------------------------------------
// Reading a CA certificate

/// What signing needs to check of a CA certificate (its subject and key identifier go to the
/// signed certificates through rcgen's [`Issuer`]).
struct CaInfo {
    /// The CA's DER, for [`Issuer::from_ca_cert_der`].
    der: Vec<u8>,
    /// Whether it has a subject key identifier (then leaves carry it as authority key identifier).
    has_skid: bool,
    /// The subject public key (the BIT STRING's contents), to check the CA key against.
    public_key: Vec<u8>,
    /// DNS name constraints, permitted and excluded.
    permitted_dns: Vec<String>,
    excluded_dns: Vec<String>,
}

/// Parses the first PEM block of `pem`, which must be a certificate (Consul's `parseCert`).
fn parse_ca(pem: &str) -> Result<CaInfo> {
    let Some((label, bytes)) = pem_decode(pem) else {
        bail!("no PEM-encoded data found");
    };
    if label != "CERTIFICATE" {
        bail!("first PEM-block should be CERTIFICATE type");
    }
    parse_ca_der(bytes).context("x509: malformed certificate")
}

fn parse_ca_der(der: Vec<u8>) -> Result<CaInfo> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow!("{e}"))?;
    let dns = |trees: &Option<Vec<x509_parser::extensions::GeneralSubtree>>| -> Vec<String> {
        trees
            .iter()
            .flatten()
            .filter_map(|t| match t.base {
                GeneralName::DNSName(d) => Some(d.to_owned()),
                _ => None,
            })
            .collect()
    };
    let (mut permitted_dns, mut excluded_dns) = (Vec::new(), Vec::new());
    let mut has_skid = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(_) => has_skid = true,
            ParsedExtension::NameConstraints(nc) => {
                permitted_dns = dns(&nc.permitted_subtrees);
                excluded_dns = dns(&nc.excluded_subtrees);
            }
            _ => {}
        }
    }
    let public_key = cert.public_key().subject_public_key.data.to_vec();
    drop(cert);
    Ok(CaInfo { der, has_skid, public_key, permitted_dns, excluded_dns })
}

/// Just enough DER to re-wrap EC keys between PKCS#8 and SEC1, which no crate in the tree does
/// for ring's keys: single-byte tags, definite lengths.
mod der {
    use anyhow::{bail, Context, Result};

    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// Constructed context tags `[0]` and `[1]`.
    pub const CONTEXT_0: u8 = 0xa0;
    pub const CONTEXT_1: u8 = 0xa1;
    /// `INTEGER 0`, a whole element (PKCS#8 version).
    pub const INTEGER_ZERO: &[u8] = &[INTEGER, 0x01, 0x00];

    /// One element: its tag, its contents, and its whole encoding.
    #[derive(Debug, Clone, Copy)]
    pub struct Tlv<'a> {
        pub tag: u8,
        pub body: &'a [u8],
        pub raw: &'a [u8],
    }

    /// Reads the element at the front of `input` and moves `input` past it.
    pub fn next<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>> {
        let all: &'a [u8] = input;
        let (&tag, rest) = all.split_first().context("truncated DER")?;
        if tag & 0x1f == 0x1f {
            bail!("unsupported DER tag");
        }
        let (&first, mut rest) = rest.split_first().context("truncated DER")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                bail!("bad DER length");
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            bail!("truncated DER");
        }
        let header = all.len() - rest.len();
        let (raw, tail) = all.split_at(header + len);
        *input = tail;
        Ok(Tlv { tag, body: &raw[header..], raw })
    }

    /// The one element `input` holds, which must have tag `tag`, with nothing after it.
    pub fn single(input: &[u8], tag: u8) -> Result<Tlv<'_>> {
        let mut rest = input;
        let t = next(&mut rest)?;
        if t.tag != tag {
            bail!("expected DER tag {tag:#04x}, found {:#04x}", t.tag);
        }
        if !rest.is_empty() {
            bail!("trailing data after DER element");
        }
        Ok(t)
    }

    /// The elements a constructed element's contents hold, in order.
    pub fn children(body: &[u8]) -> Result<Vec<Tlv<'_>>> {
        let mut rest = body;
        let mut out = Vec::new();
        while !rest.is_empty() {
            out.push(next(&mut rest)?);
        }
        Ok(out)
    }

    /// Encodes one element.
    pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 6);
        out.push(tag);
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(body);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use clap::Parser;

    use super::*;

    /// Parses a `tls` command line the way the CLI would (after Go-style flags become `--x`).
    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: TlsCmd,
    }

    fn run_in(dir: &Path, args: &[&str]) -> i32 {
        let t = T::try_parse_from(std::iter::once("tls").chain(args.iter().copied())).unwrap();
        match t.cmd {
            TlsCmd::Ca { cmd: CaCmd::Create(a) } => ca_create(dir, a).unwrap(),
            TlsCmd::Cert { cmd: CertCmd::Create(a) } => cert_create(dir, a).unwrap(),
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn mode(dir: &Path, name: &str) -> u32 {
        std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777
    }

    /// The issuer and subject `Name`s of a certificate, as raw DER, and its subject's CN.
    fn names(cert_der: &[u8]) -> (Vec<u8>, Vec<u8>, String, bool) {
        let (_, c) = x509_parser::parse_x509_certificate(cert_der).unwrap();
        let cn = c.subject().iter_common_name().next().unwrap();
        let printable = cn.attr_value().tag() == x509_parser::der_parser::asn1_rs::Tag::PrintableString;
        (c.issuer().as_raw().to_vec(), c.subject().as_raw().to_vec(), cn.as_str().unwrap().to_owned(), printable)
    }

    #[test]
    fn ca_then_server_certs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();

        assert_eq!(run_in(dir, &["ca", "create"]), 0);
        assert_eq!(mode(dir, "consul-agent-ca-key.pem"), 0o600);
        let ca_pem = read(dir, "consul-agent-ca.pem");
        let ca_key_pem = read(dir, "consul-agent-ca-key.pem");
        assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(ca_key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));

        let ca = parse_ca(&ca_pem).unwrap();
        let (_, _, cn, printable) = names(&ca.der);
        assert!(printable && cn.starts_with("Consul Agent CA "), "unexpected CN {cn:?}");
        assert!(ca.has_skid);
        assert!(ca.permitted_dns.is_empty());
        let key = parse_signer(&ca_key_pem).unwrap();
        assert_eq!(key.public_key_raw(), ca.public_key.as_slice());

        // A second CA would overwrite the first: refused.
        assert_eq!(run_in(dir, &["ca", "create"]), 1);

        assert_eq!(run_in(dir, &["cert", "create", "--server", "--node=n1", "--additional-ipaddress=10.0.0.1"]), 0);
        assert_eq!(mode(dir, "dc1-server-consul-0-key.pem"), 0o600);
        let leaf_pem = read(dir, "dc1-server-consul-0.pem");
        let (label, leaf_der) = pem_decode(&leaf_pem).unwrap();
        assert_eq!(label, "CERTIFICATE");
        let (_, ca_der) = pem_decode(&ca_pem).unwrap();
        // Chains are built by name: the leaf's issuer must be the CA's subject, byte for byte.
        let (leaf_issuer, _, leaf_cn, printable) = names(&leaf_der);
        assert_eq!(leaf_issuer, names(&ca_der).1);
        let leaf_key = parse_signer(&read(dir, "dc1-server-consul-0-key.pem")).unwrap();
        let leaf = parse_ca_der(leaf_der).unwrap();
        assert_eq!(leaf_key.public_key_raw(), leaf.public_key.as_slice());
        assert!(printable);
        assert_eq!(leaf_cn, "server.dc1.consul");

        // The next one takes the next free index.
        assert_eq!(run_in(dir, &["cert", "create", "--client"]), 0);
        assert!(dir.join("dc1-client-consul-0.pem").exists());
        assert_eq!(run_in(dir, &["cert", "create", "--server"]), 0);
        assert!(dir.join("dc1-server-consul-1.pem").exists());
        assert!(dir.join("dc1-server-consul-1-key.pem").exists());
    }

    #[test]
    fn cert_flags_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(run_in(dir, &["cert", "create"]), 1);
        assert_eq!(run_in(dir, &["cert", "create", "--server", "--client"]), 1);
        assert_eq!(run_in(dir, &["cert", "create", "--client", "--node=n1"]), 1);
        // No CA in the directory.
        assert_eq!(run_in(dir, &["cert", "create", "--cli"]), 1);
        assert!(!dir.join("dc1-cli-consul-0.pem").exists());
    }

    #[test]
    fn name_constraints_are_written_and_enforced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ca_args = ["ca", "create", "--domain=foo", "--name-constraint", "--additional-name-constraint=bar"];
        assert_eq!(run_in(dir, &ca_args), 0);
        let ca = parse_ca(&read(dir, "foo-agent-ca.pem")).unwrap();
        assert_eq!(ca.permitted_dns, ["bar", "foo", "localhost"]);
        assert_eq!(run_in(dir, &["cert", "create", "--server", "--domain=foo"]), 0);
        let outside = ["cert", "create", "--server", "--domain=foo", "--additional-dnsname=evil.example"];
        assert_eq!(run_in(dir, &outside), 1);
        assert!(!dir.join("dc1-server-foo-1.pem").exists());
    }

    #[test]
    fn key_formats_round_trip() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = pkcs8_to_sec1(key.serialized_der()).unwrap();
        let back = KeyPair::try_from(sec1_to_pkcs8(&sec1).unwrap().as_slice()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        let pkcs8_pem = pem_encode("PRIVATE KEY", key.serialized_der());
        assert_eq!(parse_signer(&pkcs8_pem).unwrap().public_key_raw(), key.public_key_raw());
        assert_eq!(parse_signer("junk").unwrap_err().to_string(), "no PEM-encoded data found");
    }

    #[test]
    fn domain_constraints_match_as_go() {
        assert!(domain_matches("server.dc1.consul", "consul"));
        assert!(domain_matches("consul", "consul"));
        assert!(domain_matches("A.Consul", "consul"));
        assert!(!domain_matches("notconsul", "consul"));
        assert!(!domain_matches("consul", ".consul"));
        assert!(domain_matches("a.consul", ".consul"));
        assert!(domain_matches("anything", ""));
    }
}
