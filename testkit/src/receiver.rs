//! A webhook receiver on loopback that checks each signature the way a receiver's own code
//! would, keeps what it was sent, and can be told to refuse or hang, so that tests can say
//! what a channel delivered and how jobwarden behaved while its receiver was down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// The secret the receiver verifies signatures with: the one to configure on the channel.
pub const SECRET: &str = "receiver-shared-secret";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200, and the message is kept with its id and whether its signature verified.
    Accept,
    /// This status with a body naming a fault, and nothing kept.
    Status(u16),
    /// Never answers (longer than any channel timeout).
    Hang,
    /// 200 and nothing kept but the request count: a benchmark's receiver, whose memory and
    /// time per request must not grow with what it has been sent.
    Count,
    /// As `Accept`, after this long: a receiver far enough away for requests to overlap.
    AcceptAfter(Duration),
    /// 503 for messages about this job id, `Accept` for the others.
    UnavailableFor(&'static str),
}

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Received {
    /// The `jobwarden-message-id` header.
    pub id: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// Whether the `jobwarden-signature` header is right for [`SECRET`] and this body.
    pub signature_ok: bool,
}

/// A running receiver; clones share it.
#[derive(Clone)]
pub struct Receiver {
    /// Where to send: `http://127.0.0.1:<port>/hook`.
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Received>>>,
    requests: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    /// A receiver on a free loopback port, on the caller's actix system (it stops with it).
    pub async fn start(mode: Mode) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        Receiver::on(listener, mode).await
    }

    /// A receiver on `listener`: an address chosen before anyone listened on it, for a test
    /// where the receiver comes up later than the channel was configured.
    pub async fn on(listener: std::net::TcpListener, mode: Mode) -> Receiver {
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("bound address")
        );
        let receiver = Receiver {
            url,
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::default(),
            requests: Arc::default(),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
        };
        let state = receiver.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .listen(listener)
        .expect("listen on the receiver's socket")
        .run();
        actix_rt::spawn(server);
        receiver
    }

    /// Answers every request from now on as `mode` says.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The messages accepted so far, in the order they arrived.
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests that reached the receiver, whatever it answered them.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The most requests it was answering at one moment.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request as under way until it is dropped.
struct Underway(Arc<AtomicUsize>);

impl Underway {
    fn begin(state: &Receiver) -> Underway {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Underway(state.in_flight.clone())
    }
}

impl Drop for Underway {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn hook(state: web::Data<Receiver>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let _underway = Underway::begin(&state);
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            HttpResponse::Ok().finish()
        }
        Mode::Status(code) => refuse(code),
        Mode::Count => HttpResponse::Ok().body("ok"),
        Mode::Accept => accept(&state, &request, &body),
        Mode::AcceptAfter(wait) => {
            tokio::time::sleep(wait).await;
            accept(&state, &request, &body)
        }
        Mode::UnavailableFor(job) => {
            let about = serde_json::from_slice::<Value>(&body).ok();
            if about.is_some_and(|b| b["job"]["id"] == job) {
                refuse(503)
            } else {
                accept(&state, &request, &body)
            }
        }
    }
}

fn refuse(code: u16) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
        .body("bad payload: missing field text")
}

fn accept(state: &Receiver, request: &HttpRequest, body: &[u8]) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature_ok = verify(SECRET, &header("jobwarden-signature"), body);
    state.got.lock().unwrap().push(Received {
        id: header("jobwarden-message-id"),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        signature_ok,
    });
    HttpResponse::Ok().body("ok")
}
