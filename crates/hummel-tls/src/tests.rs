//! Certificates made here with rcgen: a CA and a leaf for 127.0.0.1 and localhost; a real
//! listener on 127.0.0.1:0 served by `axum::serve`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::serve::ListenerExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

/// A CA and a server certificate it signed, as PEM files in a temp folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("Hummel test CA");
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        dir,
    };
    fs::write(&pki.ca, ca.pem()).unwrap();
    fs::write(&pki.cert, leaf.pem()).unwrap();
    fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_certificate_and_its_key_load_and_bad_files_are_named() {
    let p = pki();
    ServerTls::from_pem_files(&p.cert, &p.key).unwrap();

    let missing = p.dir.path().join("nope.pem");
    let e = ServerTls::from_pem_files(&missing, &p.key)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read the TLS certificate file"), "{e}");
    assert!(e.contains("nope.pem"), "{e}");

    // The key where the certificate belongs, and the other way round.
    let e = ServerTls::from_pem_files(&p.key, &p.key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
    let e = ServerTls::from_pem_files(&p.cert, &p.cert)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TLS key file") && e.contains("no PEM private key"),
        "{e}"
    );

    // A key of another certificate.
    let other = write(
        p.dir.path(),
        "other.key",
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    let e = ServerTls::from_pem_files(&p.cert, &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the key is not the certificate's"), "{e}");

    // Damaged PEM.
    let broken = write(
        p.dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let e = ServerTls::from_pem_files(&broken, &p.key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not readable as PEM"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_ca_file_may_hold_several_certificates_and_must_hold_one() {
    let p = pki();
    let bundle = format!(
        "{}{}",
        make_ca("another CA").pem(),
        fs::read_to_string(&p.ca).unwrap()
    );
    let bundle = write(p.dir.path(), "bundle.pem", &bundle);
    assert_eq!(ClientTls::with_ca_file(&bundle).unwrap().extra_roots(), 2);

    let e = ClientTls::with_ca_file(&p.key).unwrap_err().to_string();
    assert!(e.starts_with("the CA certificate file"), "{e}");
    assert!(e.contains("holds no PEM certificate"), "{e}");
    let e = ClientTls::with_ca_file(&p.dir.path().join("absent.pem"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read the CA certificate file"), "{e}");

    // A PEM block that is no certificate at all.
    let junk = write(
        p.dir.path(),
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let e = ClientTls::with_ca_file(&junk).unwrap_err().to_string();
    assert!(
        e.contains("holds a certificate (number 1) that cannot be a CA"),
        "{e}"
    );
}

/// Serves `GET /` (answering the peer's address) over TLS; returns the port, the shutdown
/// handle and the server task.
async fn serve(
    p: &Pki,
) -> (
    u16,
    CancellationToken,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let tls = ServerTls::from_pem_files(&p.cert, &p.key).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            },
        ),
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(
            TlsListener::new(tcp, &tls).tap_io(|_| {}),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    (port, shutdown, server)
}

/// The innermost cause of an error.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root.to_string()
}

#[tokio::test]
async fn https_with_the_ca_works_without_it_fails_and_plain_http_is_refused() {
    let p = pki();
    let (port, shutdown, server) = serve(&p).await;

    // Trusting the CA: by IP address and by name, the peer's address reaches the handler.
    let trusted = ClientTls::with_ca_file(&p.ca)
        .unwrap()
        .client_builder()
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let resp = trusted
            .get(format!("https://{host}:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.text().await.unwrap(), "127.0.0.1");
    }

    // The system's roots alone do not know the CA.
    let untrusted = ClientTls::system().client_builder().build().unwrap();
    let e = untrusted
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    let cause = root_cause(&e);
    assert!(cause.contains("invalid peer certificate"), "{cause}");
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    let problem = certificate_problem(&e).unwrap();
    assert!(
        problem.starts_with("the server's certificate is not signed by a CA this machine trusts"),
        "{problem}"
    );
    assert!(problem.contains("UnknownIssuer"), "{problem}");

    // Another CA of the same name is no better (its signature does not verify).
    let q = pki();
    let other = ClientTls::with_ca_file(&q.ca)
        .unwrap()
        .client_builder()
        .build()
        .unwrap();
    let e = other
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(root_cause(&e).contains("BadSignature"), "{e:?}");
    assert!(certificate_problem(&e).unwrap().contains("does not verify"));

    // Plain HTTP on the TLS port: refused, saying why; nothing is served.
    let plain = trusted
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(certificate_problem(&io::Error::other("unrelated")), None);
    assert!(plain.text().await.unwrap().contains("HTTPS only"));

    // A client that connects and says nothing does not block the others.
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let resp = trusted
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(silent);

    // Graceful shutdown ends the server.
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(
        trusted
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .is_err()
    );
}
