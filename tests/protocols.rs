//! Protocols beyond plain HTTP/1.1: WebSocket pass-through, cleartext HTTP/2 (h2c) from
//! clients, and gRPC end to end (a tonic server and client, trailers included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A WebSocket server that echoes every message back, prefixed.
async fn websocket_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let _ = ws.send(Message::Text(format!("echo: {t}"))).await;
                        }
                        Message::Binary(b) => {
                            let _ = ws.send(Message::Binary(b)).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_websocket_round_trips_through_the_gateway() {
    let rt = runtime();
    let upstream = rt.block_on(websocket_echo());
    let gw = Gateway::start(
        "",
        &route(
            "/ws",
            upstream,
            "timeouts = { read = \"1s\", websocket_idle = \"10s\" }",
        ),
    );
    rt.block_on(async {
        let (mut ws, response) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gw.addr))
                .await
                .unwrap();
        assert_eq!(response.status(), 101);
        ws.send(Message::Text("hello".into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text("echo: hello".into())
        );
        // longer than the route's read timeout: the WebSocket's own idle timeout applies
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(vec![1, 2, 3])
        );
        ws.close(None).await.unwrap();
    });
}

mod greeter {
    //! A unary gRPC service written out by hand (what tonic-build would generate).
    use std::task::{Context, Poll};
    use tonic::codegen::{http, Body, BoxFuture, Service, StdError};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloReply {
        #[prost(string, tag = "1")]
        pub message: String,
    }

    pub const PATH: &str = "/greeter.Greeter/SayHello";

    #[derive(Clone, Default)]
    pub struct Greeter;

    struct SayHello;

    impl tonic::server::UnaryService<HelloRequest> for SayHello {
        type Response = HelloReply;
        type Future = BoxFuture<tonic::Response<HelloReply>, tonic::Status>;
        fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
            Box::pin(async move {
                let name = request.into_inner().name;
                if name.is_empty() {
                    return Err(tonic::Status::invalid_argument("name is empty"));
                }
                Ok(tonic::Response::new(HelloReply {
                    message: format!("Hello, {name}!"),
                }))
            })
        }
    }

    impl<B> Service<http::Request<B>> for Greeter
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::BoxBody>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            Box::pin(async move {
                if req.uri().path() == PATH {
                    let codec = tonic::codec::ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.unary(SayHello, req).await)
                } else {
                    Ok(http::Response::builder()
                        .status(200)
                        .header("grpc-status", "12")
                        .header("content-type", "application/grpc")
                        .body(tonic::body::empty_body())
                        .unwrap())
                }
            })
        }
    }

    impl tonic::server::NamedService for Greeter {
        const NAME: &'static str = "greeter.Greeter";
    }
}

async fn grpc_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(greeter::Greeter)
            .serve_with_incoming(tokio_stream_from(listener))
            .await
            .unwrap();
    });
    addr
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| s);
        Some((accepted, listener))
    })
}

async fn say_hello(
    gateway: SocketAddr,
    name: &str,
) -> Result<tonic::Response<greeter::HelloReply>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(greeter::HelloRequest { name: name.into() }),
        tonic::codegen::http::uri::PathAndQuery::from_static(greeter::PATH),
        tonic::codec::ProstCodec::default(),
    )
    .await
}

#[test]
fn a_grpc_unary_call_goes_through_over_h2c_with_its_trailers() {
    let rt = runtime();
    let upstream = rt.block_on(grpc_server());
    let gw = Gateway::start(
        "h2c = true",
        &route(
            "/greeter.Greeter",
            upstream,
            "http2 = true\nstrip_prefix = false",
        ),
    );
    rt.block_on(async {
        let reply = say_hello(gw.addr, "Pylon").await.unwrap();
        assert_eq!(reply.get_ref().message, "Hello, Pylon!");
        // an error status travels in the trailers
        let err = say_hello(gw.addr, "").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "name is empty");
    });
}

#[test]
fn h2c_clients_are_served_when_enabled() {
    let up = Upstream::echo();
    let gw = Gateway::start("h2c = true", &route("/a", up.addr, ""));
    let rt = runtime();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let resp = h2_get(stream, &format!("http://{}/a/x", gw.addr)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert!(resp.headers().contains_key("x-content-type-options"));
    });
    assert_eq!(up.last().target, "/x");
}
