//! Delivery over HTTPS: the real destinations are all TLS. A local receiver
//! with a freshly generated certificate stands in for them.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header::HeaderValue, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ldbridge::{
    deliver::{launchdarkly, HttpClient},
    retry::Answer,
};

/// Serves 202 over TLS on 127.0.0.1 (certificate for `localhost`). Returns
/// the port and the certificate to trust.
async fn tls_receiver() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = hyper::StatusCode::ACCEPTED;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn batches_are_delivered_over_https_and_untrusted_certificates_are_refused() {
    let (port, cert) = tls_receiver().await;
    let request = launchdarkly::bulk_request(
        &format!("https://localhost:{port}"),
        launchdarkly::Credential::ClientSideId("6488674dc2ea1d6673731ba2"),
        "4",
        "payload-1",
        Bytes::from_static(b"[]"),
    )
    .unwrap();
    assert_eq!(
        request
            .headers
            .iter()
            .find(|(n, _)| n == "x-launchdarkly-payload-id")
            .map(|(_, v)| v),
        Some(&HeaderValue::from_static("payload-1"))
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = HttpClient::with_roots(roots);
    let reply = trusting.send(&request, Duration::from_secs(10)).await;
    assert_eq!(reply.http_status(), Some(202), "{:?}", reply.error());

    // The production client trusts the public web PKI only: a self-signed
    // certificate is a transport error (retried), never a silent success.
    let reply = HttpClient::new()
        .send(&request, Duration::from_secs(10))
        .await;
    match reply.answer {
        Answer::Transport(error) => {
            assert!(error.to_lowercase().contains("certificate"), "{error}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
}
