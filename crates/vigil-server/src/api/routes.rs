//! The routing table: every route's path pattern and methods, defined once.
//!
//! [`Route::of`] is the one place a request path is matched: the dispatcher (`route` in
//! `http/mod.rs`) picks the handler from it, the metrics use its pattern as the `route`
//! label (never the raw path), and [`ROUTES`] lists it for the OpenAPI test, which checks
//! `openapi.json` against the table and the table against the running server. A new route is
//! one variant here (pattern, methods, `Allow`) and one arm in the dispatcher.

/// A route of the API, or [`Route::Unmatched`] for any other path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The console page (`GET /`).
    Console,
    /// The console's files.
    ConsoleFile,
    Health,
    Ready,
    OpenApi,
    Metrics,
    Ws,
    Events,
    EventStream,
    Event,
    /// Any path the table does not know (a 404): one metrics label for all of them.
    Unmatched,
}

impl Route {
    /// Every route that is served, in the table's order.
    pub const SERVED: [Route; 10] = [
        Route::Console,
        Route::ConsoleFile,
        Route::Health,
        Route::Ready,
        Route::OpenApi,
        Route::Metrics,
        Route::Ws,
        Route::Events,
        Route::EventStream,
        Route::Event,
    ];

    /// Every value, [`Route::Unmatched`] last (metrics keep one slot per value).
    pub const ALL: [Route; Route::SERVED.len() + 1] = {
        let mut all = [Route::Unmatched; Route::SERVED.len() + 1];
        let mut position = 0;
        while position < Route::SERVED.len() {
            all[position] = Route::SERVED[position];
            position += 1;
        }
        all
    };

    /// The route a request path belongs to.
    pub fn of(path: &str) -> Route {
        match path {
            "/" => Route::Console,
            "/api/health" => Route::Health,
            "/api/ready" => Route::Ready,
            "/api/openapi.json" => Route::OpenApi,
            "/metrics" => Route::Metrics,
            "/api/events" => Route::Events,
            "/api/events/stream" => Route::EventStream,
            "/ws" => Route::Ws,
            _ => {
                if let Some(id) = path.strip_prefix("/api/events/") {
                    if !id.contains('/') {
                        return Route::Event;
                    }
                } else if let Some(name) = path.strip_prefix("/console/")
                    && !name.contains('/')
                {
                    return Route::ConsoleFile;
                }
                Route::Unmatched
            }
        }
    }

    /// The OpenAPI path pattern, also the metrics' `route` label.
    pub const fn pattern(self) -> &'static str {
        self.spec().0
    }

    /// The methods the route serves.
    pub const fn methods(self) -> &'static [&'static str] {
        self.spec().1
    }

    /// The `Allow` header of a 405 on this route.
    pub const fn allow(self) -> &'static str {
        self.spec().2
    }

    /// Pattern, methods, and the same methods as an `Allow` value.
    const fn spec(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Route::Console => ("/", &["GET", "HEAD"], "GET, HEAD"),
            Route::ConsoleFile => ("/console/{name}", &["GET", "HEAD"], "GET, HEAD"),
            Route::Health => ("/api/health", &["GET", "HEAD"], "GET, HEAD"),
            Route::Ready => ("/api/ready", &["GET", "HEAD"], "GET, HEAD"),
            Route::OpenApi => ("/api/openapi.json", &["GET", "HEAD"], "GET, HEAD"),
            Route::Metrics => ("/metrics", &["GET", "HEAD"], "GET, HEAD"),
            Route::Ws => ("/ws", &["GET"], "GET"),
            Route::Events => ("/api/events", &["GET", "HEAD", "POST"], "GET, HEAD, POST"),
            Route::EventStream => ("/api/events/stream", &["GET"], "GET"),
            Route::Event => ("/api/events/{id}", &["GET", "HEAD"], "GET, HEAD"),
            Route::Unmatched => ("unmatched", &[], ""),
        }
    }
}

const TABLE: [(&str, &[&str]); Route::SERVED.len()] = {
    let mut table: [(&str, &[&str]); Route::SERVED.len()] = [("", &[]); Route::SERVED.len()];
    let mut position = 0;
    while position < Route::SERVED.len() {
        let route = Route::SERVED[position];
        table[position] = (route.pattern(), route.methods());
        position += 1;
    }
    table
};

/// Every route served, as OpenAPI path patterns with their methods.
pub const ROUTES: &[(&str, &[&str])] = &TABLE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_bounded_route_patterns() {
        for (path, pattern) in [
            ("/api/health", "/api/health"),
            ("/api/ready", "/api/ready"),
            ("/metrics", "/metrics"),
            ("/api/events", "/api/events"),
            ("/api/events/17", "/api/events/{id}"),
            ("/api/events/stream", "/api/events/stream"),
            ("/api/events/abc", "/api/events/{id}"),
            ("/api/events/1/2", "unmatched"),
            ("/ws", "/ws"),
            ("/", "/"),
            ("/console/app.js", "/console/{name}"),
            ("/console/a/b", "unmatched"),
            ("/index.html", "unmatched"),
            ("/wp-admin/setup.php", "unmatched"),
        ] {
            assert_eq!(Route::of(path).pattern(), pattern, "{path}");
        }
    }

    #[test]
    fn allow_lists_the_routes_methods() {
        for route in Route::SERVED {
            assert_eq!(route.allow(), route.methods().join(", "), "{route:?}");
            let path = route
                .pattern()
                .replace("{id}", "7")
                .replace("{name}", "app.js");
            assert_eq!(Route::of(&path), route);
        }
    }
}
