//! The dashboard over real HTTP: sign-in and sessions, the checks every
//! form passes, roles, the views' HTML and the operator actions with their
//! audit records. A small cookie-keeping client stands in for the browser
//! (the browser itself runs in `tests/ui/`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use steadfast_core::Role;

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of the first `name="csrf"` field on the page.
    fn csrf(&self) -> String {
        let at = self.html.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
        self.html[at..at + self.html[at..].find('"').unwrap()].to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// Keeps cookies and never follows redirects, as a test must see them.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let part = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", part(k), part(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        Browser {
            base: server.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.keep(request.send().await.unwrap()).await
    }

    /// A form post as a browser on this origin sends it.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_with(
            path,
            form,
            &[("origin", self.base.clone()), ("sec-fetch-site", "same-origin".into())],
        )
        .await
    }

    async fn post_with(&mut self, path: &str, form: &[(&str, &str)], headers: &[(&str, String)]) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        self.keep(response).await
    }

    /// Signs in with `key` through the form; panics unless it worked.
    async fn sign_in(&mut self, key: &str) {
        let login = self.get("/ui/login").await;
        let signed = self
            .post(
                "/ui/login",
                &[("api_key", key), ("csrf", &login.csrf()), ("next", "/ui")],
            )
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.html);
    }
}

async fn id_of(server: &TestServer, key: &str, body: Value) -> String {
    server.enqueue(key, body).await["id"].as_str().unwrap().to_owned()
}

async fn audit_of(server: &TestServer, key: &str, id: &str, action: &str) -> Vec<Value> {
    let trail = server.get(&format!("/v1/audit?job_id={id}&action={action}"), key).await;
    trail.json()["records"].as_array().unwrap().clone()
}

fn key_id(key: &str) -> String {
    steadfast_core::ApiKeySecret::parse(key).unwrap().key_id().to_string()
}

async fn sign_in_makes_a_strict_session_that_ends_at_sign_out_idleness_or_revocation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let mut browser = Browser::new(&server);

    let anonymous = browser.get("/ui/jobs?state=dead").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Ddead");
    let login = browser.get("/ui/login?next=/ui/jobs").await;
    assert!(login.html.contains("<label for=\"api_key\">API key</label>"));
    assert!(login.html.contains(">Sign in</button>"));

    let wrong = browser
        .post(
            "/ui/login",
            &[("api_key", "sf_nope"), ("csrf", &login.csrf()), ("next", "/ui/jobs")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.html.contains("That API key is not valid."));
    assert!(!browser.cookies.contains_key("sf_session"));
    let forged = browser
        .post(
            "/ui/login",
            &[("api_key", &admin), ("csrf", "guessed"), ("next", "/ui")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "a sign-in form needs its token");

    let login = browser.get("/ui/login").await;
    let signed = browser
        .post(
            "/ui/login",
            &[
                ("api_key", &admin),
                ("csrf", &login.csrf()),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(
        (signed.status, signed.location()),
        (StatusCode::SEE_OTHER, "/ui"),
        "never sent off-site"
    );
    let session = signed
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("sf_session="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP here: {session}");
    assert!(!session.contains(&admin), "the key never leaves the server");
    let home = browser.get("/ui").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.html.contains("Signed in as"));

    // Idle past the limit (30 minutes by default): signed out. A page's
    // own polling is not use, so an unattended tab ends too.
    server.advance(Duration::from_secs(29 * 60));
    assert_eq!(browser.get("/ui").await.status, StatusCode::OK);
    server.advance(Duration::from_secs(29 * 60));
    let poll = browser.get_with("/ui/live/overview", &[("hx-request", "true")]).await;
    assert_eq!(poll.status, StatusCode::OK, "still signed in");
    server.advance(Duration::from_secs(60 + 1));
    let poll = browser.get_with("/ui/live/overview", &[("hx-request", "true")]).await;
    assert_eq!(
        (poll.status, poll.headers["hx-redirect"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "/ui/login"),
        "htmx is sent to sign in, not given the form to swap in"
    );
    assert_eq!(browser.get("/ui").await.status, StatusCode::SEE_OTHER);

    // A `next` that is not a plain path of the dashboard goes nowhere else.
    let login = browser.get("/ui/login").await;
    let odd = browser
        .post(
            "/ui/login",
            &[("api_key", &admin), ("csrf", &login.csrf()), ("next", "/ui\n/x")],
        )
        .await;
    assert_eq!((odd.status, odd.location()), (StatusCode::SEE_OTHER, "/ui"));

    // Sign-out ends the session on the server, not only in the browser.
    browser.sign_in(&admin).await;
    let token = browser.cookies["sf_session"].clone();
    let page = browser.get("/ui").await;
    let out = browser.post("/ui/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/ui/login"));
    browser.cookies.insert("sf_session".into(), token);
    assert_eq!(
        browser.get("/ui").await.status,
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );

    // A key revoked after sign-in loses its session at once.
    browser.sign_in(&admin).await;
    let secret = steadfast_core::ApiKeySecret::parse(&admin).unwrap();
    server
        .store
        .revoke_key(secret.key_id(), server.engine.now())
        .await
        .unwrap();
    assert_eq!(browser.get("/ui").await.status, StatusCode::SEE_OTHER);
}

async fn forms_are_refused_from_another_site_or_without_the_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let id = id_of(&server, &admin, json!({"queue": "q", "payload": {}})).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&admin).await;
    let page = browser.get(&format!("/ui/jobs/{id}")).await;
    let csrf = page.csrf();
    let path = format!("/ui/jobs/{id}/cancel");
    let form = [("csrf", csrf.as_str()), ("reason", "test")];

    for (headers, what) in [
        (vec![("origin", "http://evil.example".to_owned())], "another origin"),
        (vec![("sec-fetch-site", "cross-site".to_owned())], "a cross-site fetch"),
        (vec![("sec-fetch-site", "same-site".to_owned())], "a sibling site"),
        (vec![("origin", "null".to_owned())], "an opaque origin"),
    ] {
        let refused = browser.post_with(&path, &form, &headers).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{what}");
        assert!(refused.html.contains("another site"), "{what}: {}", refused.html);
    }
    for bad in [vec![("reason", "test")], vec![("csrf", "forged"), ("reason", "test")]] {
        let refused = browser.post(&path, &bad).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{bad:?}");
    }
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "queued"
    );
    let blank = browser.post(&path, &[("csrf", &csrf), ("reason", "  ")]).await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY, "a reason is needed");
    let done = browser.post(&path, &form).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "cancelled"
    );
}

async fn a_reader_sees_everything_and_no_action_and_its_forged_posts_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let id = id_of(&server, &admin, json!({"queue": "q", "payload": {"n": 1}})).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&reader).await;
    let page = browser.get(&format!("/ui/jobs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.html.contains("&#34;n&#34;: 1"),
        "the payload, pretty: {}",
        page.html
    );
    for verb in [
        "Retry",
        "Cancel",
        "Approve",
        "Reject",
        "Send signal",
        "Resolve",
        "Replay",
    ] {
        assert!(
            !page.html.contains(&format!(">{verb}</button>")),
            "a reader sees no {verb}"
        );
    }
    let csrf = page.csrf();
    for action in ["cancel", "replay", "signal", "approve"] {
        let forged = browser
            .post(
                &format!("/ui/jobs/{id}/{action}"),
                &[("csrf", &csrf), ("reason", "x"), ("name", "go")],
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{action}: {}", forged.html);
    }
    let verify = browser.post("/ui/audit/verify", &[("csrf", &csrf)]).await;
    assert_eq!(verify.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "queued"
    );
    assert_eq!(audit_of(&server, &admin, &id, "job.cancelled").await.len(), 0);
    // An admin sees the buttons.
    let mut admin_browser = Browser::new(&server);
    admin_browser.sign_in(&admin).await;
    let page = admin_browser.get(&format!("/ui/jobs/{id}")).await;
    for verb in ["Cancel", "Send signal", "Replay"] {
        assert!(page.html.contains(&format!(">{verb}</button>")), "an admin sees {verb}");
    }
}

async fn a_dead_job_retried_from_the_dashboard_carries_its_reason_into_the_audit_log(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let id = id_of(&server, &admin, json!({"queue": "pay", "payload": {"claim": 7}})).await;
    let leased = server.lease_one(&admin, "pay", "w1").await;
    let failed = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            &admin,
            json!({"lease_token": leased["lease_token"], "error": {"message": "card declined", "kind": "card_declined"}, "retryable": false}),
        )
        .await;
    assert_eq!(failed.json()["state"], "dead");
    let mut browser = Browser::new(&server);
    browser.sign_in(&admin).await;

    let dead = browser.get("/ui/dead").await;
    assert!(
        dead.html.contains("/ui/jobs?state=dead&#38;kind=card_declined"),
        "{}",
        dead.html
    );
    let listed = browser.get("/ui/jobs?state=dead&kind=card_declined").await;
    assert!(listed.html.contains(&id));
    let page = browser.get(&format!("/ui/jobs/{id}")).await;
    assert!(page.html.contains(">Retry</button>"));
    let retried = browser
        .post(
            &format!("/ui/jobs/{id}/retry"),
            &[("csrf", &page.csrf()), ("reason", "the customer updated the card")],
        )
        .await;
    assert_eq!(
        (retried.status, retried.location()),
        (StatusCode::SEE_OTHER, format!("/ui/jobs/{id}?done=retried").as_str())
    );
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "queued"
    );
    let record = &audit_of(&server, &admin, &id, "job.retried").await[0];
    assert_eq!(record["summary"]["reason"], "the customer updated the card");
    assert_eq!(record["actor"]["key_id"], key_id(&admin));
    let shown = browser.get(&format!("/ui/jobs/{id}?done=retried")).await;
    assert!(shown.html.contains("Retried."));
    assert!(
        shown.html.contains("the customer updated the card"),
        "the job's own audit records"
    );
}

async fn approve_and_reject_deliver_the_awaited_signal_with_who_and_why(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let producer = server.key("acme", Role::Producer).await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let id = id_of(&server, &admin, json!({"queue": "claims", "payload": {}})).await;
        let leased = server.lease_one(&admin, "claims", "w1").await;
        let parked = server
            .post(
                &format!("/v1/jobs/{id}/wait"),
                &admin,
                json!({"lease_token": leased["lease_token"], "step": "approval", "signal": "approval"}),
            )
            .await;
        assert_eq!(parked.json()["suspended"], true, "{}", parked.text);
        waiting.push(id);
    }
    let mut browser = Browser::new(&server);
    browser.sign_in(&producer).await;
    let overview = browser.get("/ui").await;
    assert!(overview.html.contains("Waiting for a signal (approvals)"));
    assert!(overview.html.contains(&waiting[0]));

    for (id, verb, approved) in [(&waiting[0], "approve", true), (&waiting[1], "reject", false)] {
        let page = browser.get(&format!("/ui/jobs/{id}")).await;
        assert!(page.html.contains(">Approve</button>") && page.html.contains(">Reject</button>"));
        let stale = browser
            .post(
                &format!("/ui/jobs/{id}/{verb}"),
                &[("csrf", &page.csrf()), ("reason", "x"), ("signal", "another-wait")],
            )
            .await;
        assert_eq!(stale.status, StatusCode::CONFLICT, "a decision answers the wait it saw");
        let done = browser
            .post(
                &format!("/ui/jobs/{id}/{verb}"),
                &[
                    ("csrf", &page.csrf()),
                    ("reason", "limits checked"),
                    ("signal", "approval"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
        let job = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
        assert_eq!(job["state"], "queued", "the workflow woke");
        let step = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "approval")
            .unwrap()
            .clone();
        assert_eq!(
            step["output"]["payload"],
            json!({"approved": approved, "reason": "limits checked", "by": key_id(&producer)})
        );
        let record = &audit_of(&server, &admin, id, "signal.received").await[0];
        assert_eq!(record["summary"]["reason"], "limits checked");
        assert_eq!(record["actor"]["key_id"], key_id(&producer));
    }
    // Nothing waits now: approving again is refused and changes nothing.
    let page = browser.get(&format!("/ui/jobs/{}", waiting[0])).await;
    assert!(!page.html.contains(">Approve</button>"));
    let again = browser
        .post(
            &format!("/ui/jobs/{}/approve", waiting[0]),
            &[("csrf", &page.csrf()), ("reason", "x")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

async fn every_view_renders_escapes_what_it_shows_and_stays_in_its_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let stranger = server.key("globex", Role::Admin).await;
    let id = id_of(
        &server,
        &admin,
        json!({"queue": "q", "payload": {"html": "<script>alert(1)</script>"}}),
    )
    .await;
    let theirs = id_of(&server, &stranger, json!({"queue": "secret-queue", "payload": {}})).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&admin).await;
    for path in [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/queues/q".to_owned(),
        format!("/ui/jobs/{id}"),
        "/ui/dead".to_owned(),
        "/ui/audit".to_owned(),
        "/ui/sources".to_owned(),
        "/ui/policies".to_owned(),
        "/ui/live/overview".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(page.headers["cache-control"], "no-store", "{path}");
        assert!(!page.html.contains("<script>alert"), "{path} escapes");
        assert!(
            !page.html.contains("secret-queue") && !page.html.contains(&theirs),
            "{path} shows another tenant"
        );
    }
    let job = browser.get(&format!("/ui/jobs/{id}")).await;
    assert!(
        job.html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        job.html
    );
    assert_eq!(
        browser.get(&format!("/ui/jobs/{theirs}")).await.status,
        StatusCode::NOT_FOUND
    );
    for (path, status) in [
        ("/ui/jobs/not-a-job", StatusCode::NOT_FOUND),
        ("/ui/nowhere", StatusCode::NOT_FOUND),
        ("/ui/jobs?state=sleeping", StatusCode::UNPROCESSABLE_ENTITY),
        ("/ui/jobs?from=yesterday", StatusCode::UNPROCESSABLE_ENTITY),
        ("/ui/jobs?cursor=zz", StatusCode::UNPROCESSABLE_ENTITY),
        ("/ui/audit?job=nope", StatusCode::UNPROCESSABLE_ENTITY),
        ("/ui/sources/nope", StatusCode::NOT_FOUND),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, status, "{path}: {}", page.html);
        assert!(page.html.contains("<h1>"), "{path} is a page, not a bare error");
    }
    let htmx = browser.get("/ui/static/htmx.min.js").await;
    assert_eq!(htmx.headers["content-type"], "text/javascript; charset=utf-8");
}

async fn the_overview_counts_and_is_read_once_per_refresh_interval(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    for _ in 0..3 {
        id_of(&server, &admin, json!({"queue": "mail", "payload": {}})).await;
    }
    let done = server.lease_one(&admin, "mail", "w").await;
    let id = done["id"].as_str().unwrap();
    server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &admin,
            json!({"lease_token": done["lease_token"]}),
        )
        .await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&admin).await;
    let row = |html: &str| {
        let at = html.find("/ui/queues/mail").expect("the queue's row");
        html[at..at + html[at..].find("</tr>").unwrap()].to_owned()
    };
    let counts = |row: &str| -> Vec<String> {
        row.split("<td class=\"num\">")
            .skip(1)
            .map(|cell| cell.split('<').next().unwrap().to_owned())
            .collect()
    };
    let first = browser.get("/ui/live/overview").await;
    // scheduled, queued, running, waiting, succeeded (1 h), dead (1 h), failure ratio.
    assert_eq!(counts(&row(&first.html))[..7], ["0", "2", "0", "0", "1", "0", "0.0%"]);

    id_of(&server, &admin, json!({"queue": "mail", "payload": {}})).await;
    let cached = browser.get("/ui/live/overview").await;
    assert_eq!(counts(&row(&cached.html))[1], "2", "read again only after the interval");
    server.advance(Duration::from_secs(5));
    let fresh = browser.get("/ui/live/overview").await;
    assert_eq!(counts(&row(&fresh.html))[1], "3");
    // Ready for over a minute and nothing running: no worker is leasing.
    server.advance(Duration::from_secs(61));
    let idle = browser.get("/ui/live/overview").await;
    assert!(idle.html.contains("no worker leasing"), "{}", idle.html);
}

async fn a_bulk_retry_counts_first_names_the_count_and_shows_its_progress(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let mut dead = Vec::new();
    for kind in ["declined", "declined", "declined", "timeout"] {
        let id = id_of(&server, &admin, json!({"queue": "pay", "payload": {}})).await;
        let leased = server.lease_one(&admin, "pay", "w1").await;
        server
            .post(
                &format!("/v1/jobs/{id}/fail"),
                &admin,
                json!({"lease_token": leased["lease_token"], "error": {"message": "no", "kind": kind}, "retryable": false}),
            )
            .await;
        if kind == "declined" {
            dead.push(id);
        }
    }
    let mut browser = Browser::new(&server);
    browser.sign_in(&admin).await;
    let list = browser.get("/ui/jobs?state=dead&kind=declined").await;
    assert!(list.html.contains(">Retry all matching…</button>"));
    let confirm = browser
        .get("/ui/bulk/new?action=retry&queue=&state=dead&kind=declined&from=&to=")
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.html);
    assert!(
        confirm.html.contains("<strong>3</strong> jobs match"),
        "{}",
        confirm.html
    );
    assert!(confirm.html.contains(">Retry 3 jobs</button>"));
    assert_eq!(
        server.get(&format!("/v1/jobs/{}", dead[0]), &admin).await.json()["state"],
        "dead",
        "a dry run changes nothing"
    );
    let form = [
        ("csrf", confirm.csrf()),
        ("action", "retry".into()),
        ("queue", String::new()),
        ("state", "dead".into()),
        ("kind", "declined".into()),
        ("from", String::new()),
        ("to", String::new()),
        ("reason", "the processor is back".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = browser.post("/ui/bulk", &form).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.html);
    let page_path = started.location().to_owned();
    assert!(page_path.starts_with("/ui/bulk/"));
    let running = browser.get(&page_path).await;
    assert!(running.html.contains("<strong>running</strong>") && running.html.contains(">Stop</button>"));
    while server.engine.run_bulk_once().await.unwrap() > 0 {}
    let done = browser.get(&page_path).await;
    assert!(done.html.contains("<strong>completed</strong>"), "{}", done.html);
    assert!(done.html.contains("3 done, 0 failed, of 3 matched"));
    assert!(done.html.contains("the processor is back"));
    for id in &dead {
        assert_eq!(
            server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
            "queued"
        );
    }
    let listed = browser.get("/ui/bulk").await;
    assert!(listed.html.contains(&page_path));

    let mut reading = Browser::new(&server);
    reading.sign_in(&reader).await;
    let list = reading.get("/ui/jobs?state=dead").await;
    assert!(!list.html.contains("Retry all matching"));
    assert_eq!(
        reading.get("/ui/bulk/new?action=retry&state=dead").await.status,
        StatusCode::FORBIDDEN
    );
    let mut forged: Vec<(&str, &str)> = form.clone();
    let token = list.csrf();
    forged[0] = ("csrf", token.as_str());
    assert_eq!(reading.post("/ui/bulk", &forged).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reading.get(&page_path).await.status,
        StatusCode::OK,
        "a reader may look"
    );
}

async fn behind_a_tls_proxy_forms_come_from_the_public_origin_and_cookies_are_secure(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        steadfast_server::EngineConfig {
            ui_origin: Some("https://ops.example.com".into()),
            ..Default::default()
        },
    )
    .await;
    let admin = server.key("acme", Role::Admin).await;
    let mut browser = Browser::new(&server);
    let login = browser.get("/ui/login").await;
    let cookie = login
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("sf_login="))
        .unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    let form = [("api_key", admin.as_str()), ("csrf", &login.csrf()), ("next", "/ui")];
    let local = browser.post("/ui/login", &form).await;
    assert_eq!(
        local.status,
        StatusCode::FORBIDDEN,
        "the server's own origin is not the public one"
    );
    let public = browser
        .post_with("/ui/login", &form, &[("origin", "https://ops.example.com".to_owned())])
        .await;
    assert_eq!(public.status, StatusCode::SEE_OTHER, "{}", public.html);
    let session = public
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("sf_session="))
        .unwrap();
    assert!(session.contains("Secure"), "{session}");
}

on_both_backends!(
    behind_a_tls_proxy_forms_come_from_the_public_origin_and_cookies_are_secure,
    a_bulk_retry_counts_first_names_the_count_and_shows_its_progress,
    sign_in_makes_a_strict_session_that_ends_at_sign_out_idleness_or_revocation,
    forms_are_refused_from_another_site_or_without_the_token,
    a_reader_sees_everything_and_no_action_and_its_forged_posts_are_refused,
    a_dead_job_retried_from_the_dashboard_carries_its_reason_into_the_audit_log,
    approve_and_reject_deliver_the_awaited_signal_with_who_and_why,
    every_view_renders_escapes_what_it_shows_and_stays_in_its_tenant,
    the_overview_counts_and_is_read_once_per_refresh_interval,
);
