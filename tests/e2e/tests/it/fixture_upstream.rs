//! The test upstream itself (used by every Envoy test and by the migrator's tests): keep-alive,
//! content-length and chunked bodies, raw header bytes, and each configurable behaviour.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cutover_e2e::{HttpClient, Upstream};

#[test]
fn records_requests_and_answers_with_its_name() {
    let upstream = Upstream::start("chat_legacy");
    let mut client = HttpClient::new(&upstream.url());
    let body = vec![7u8; 100 * 1024];
    let response = client.send("PUT", "/a/b?x=1&y=2", &[("x-odd", b"\xff\x80 v")], &body);
    assert_eq!(response.status, 200);
    assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
    assert_eq!(response.body_text(), "chat_legacy");
    let second = client.get("/second");
    assert_eq!(second.status, 200);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].path(), "/a/b");
    assert_eq!(requests[0].query(), Some("x=1&y=2"));
    assert_eq!(requests[0].header("x-odd"), Some(&b"\xff\x80 v"[..]));
    assert_eq!(requests[0].body, body);
    assert_eq!(requests[1].target, "/second");
}

#[test]
fn reads_chunked_request_bodies_on_a_kept_alive_connection() {
    let upstream = Upstream::start("chat_new");
    let mut stream = TcpStream::connect(upstream.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    stream.write_all(request).unwrap();
    stream.write_all(request).unwrap();
    upstream.wait_for_requests(2, Duration::from_secs(5));
    assert!(upstream.requests().iter().all(|r| r.body == b"hello world"));
    let mut answers = vec![0u8; 4096];
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&answers[..read])
        .matches("HTTP/1.1 200")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "two answers on one connection");
        read += stream.read(&mut answers[read..]).unwrap();
    }
}

#[test]
fn behaviours_status_fail_every_delay_and_down() {
    let upstream = Upstream::start("orchestration_new");
    let mut client = HttpClient::new(&upstream.url());
    upstream.set_status(201);
    assert_eq!(client.get("/").status, 201);

    upstream.set_status(200);
    upstream.set_fail_every(3);
    let statuses: Vec<u16> = (0..6).map(|_| client.get("/").status).collect();
    // Requests 1..=6 since start counted: #1 above, so #3 and #6 are the 2nd and 5th here.
    assert_eq!(statuses, [200, 500, 200, 200, 500, 200]);
    upstream.set_fail_every(0);

    upstream.set_delay(Duration::from_millis(300));
    let response = client.get("/slow");
    assert!(
        response.elapsed >= Duration::from_millis(300),
        "{:?}",
        response.elapsed
    );
    upstream.set_delay(Duration::ZERO);

    let mut down = Upstream::start("orchestration_legacy");
    down.stop();
    assert!(HttpClient::new(&down.url())
        .try_send("GET", "/", &[], b"")
        .is_err());
    let never_up = Upstream::start_down("chat_legacy");
    assert!(TcpStream::connect(never_up.addr()).is_err());
    assert_eq!(never_up.request_count(), 0);
}
