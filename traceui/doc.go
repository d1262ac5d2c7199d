// Package traceui is the coordinator's web view of request traces: a page
// listing recent requests and, for each request, a page with its headline
// figures, its cross-node swimlane timeline (tracing.WriteSVG, inlined),
// its per-token table and, when the coordinator can make one, a link to
// download its Perfetto (Chrome trace) JSON.
//
// Handler serves, under /ui/:
//
//	GET /ui/                           recent requests, newest first (?limit=N, default 100)
//	GET /ui/requests/{id}              one request's page
//	GET /ui/requests/{id}/perfetto.json  its Perfetto JSON (only with Options.Perfetto)
//	GET /ui/static/...                 the page's CSS and JS
//
// Unknown request ids get a 404 page, errors of the Source a 500 page with
// the error's text, and methods other than GET and HEAD a 405.
//
// The pages are plain HTML from embedded html/template templates, one
// embedded stylesheet and one small embedded script that shows the
// hovered timeline rect's <title> as a floating tooltip: no CDN, no
// framework, nothing fetched from elsewhere, so that the view works on a
// cluster with no way out. A Content-Security-Policy allowing only the
// handler's own scripts and styles backs that up, and keeps text from the
// trace (request ids, node names) from ever running as script.
package traceui
