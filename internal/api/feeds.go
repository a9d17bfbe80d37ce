package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/store"
)

// feedList serves /feeds/ip-addresses and /feeds/numbers: blocklists in the format asked
// for, streamed page by page, never-block entries left out.
func (h *handler) feedList(l store.List) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, q, ok := h.feedQuery(w, r, l, false)
		if !ok {
			return
		}
		s, release, ok := h.startFeed(w, r, feed.ContentType(q.Format))
		if !ok {
			return
		}
		defer release()
		err := feed.Render(r.Context(), s.out, h.cfg.Feeds, q, h.cfg.Guards, h.cfg.Now(), s.extend)
		h.endFeed(r, s, err)
	}
}

// feedStream serves /feeds/stream: the address set, then its changes as they happen (see
// feed.Serve for the lines), until the client or the server goes.
func (h *handler) feedStream(w http.ResponseWriter, r *http.Request) {
	v, q, ok := h.feedQuery(w, r, store.IPAddresses, true)
	if !ok {
		return
	}
	var heartbeat time.Duration
	if s := v.Get("heartbeat"); s != "" {
		var err error
		heartbeat, err = time.ParseDuration(s)
		if err == nil && (heartbeat < time.Second || heartbeat > 5*time.Minute) {
			err = errors.New("heartbeat must be from 1s to 5m")
		}
		if err != nil {
			h.badRequestDetail(w, r, err)
			return
		}
	}
	// Each open stream asks the store a few times a second: there are only so many.
	if h.changeStreams.Add(1) > int32(h.cfg.MaxChangeStreams) {
		h.changeStreams.Add(-1)
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "Too many change streams are open; try again later.")
		return
	}
	defer h.changeStreams.Add(-1)
	// Proxies that buffer (nginx) would hold the lines back.
	w.Header().Set("X-Accel-Buffering", "no")
	s, release, ok := h.startFeed(w, r, "application/x-ndjson")
	if !ok {
		return
	}
	defer release()
	s.extend()
	err := feed.Serve(r.Context(), s.w, h.cfg.Feeds, feed.StreamOptions{
		Query: q, Cursor: v.Get("cursor"), Guards: h.cfg.Guards, Heartbeat: heartbeat,
		Poll: h.cfg.FeedPoll, Now: h.cfg.Now, Done: h.cfg.done, Changes: h.cfg.changes,
		Flush: func() error {
			if err := s.w.Flush(); err != nil {
				return err
			}
			return s.rc.Flush()
		},
		Progress: s.extend,
	})
	if err == nil {
		err = s.w.Flush()
	}
	h.endFeed(r, s, err)
}

// feedQuery reads a feed request's parameters (a stream's format is ndjson, its own); it
// answers the request itself when they are not valid.
func (h *handler) feedQuery(w http.ResponseWriter, r *http.Request, l store.List, stream bool) (url.Values, feed.Query, bool) {
	if h.cfg.Feeds == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return nil, feed.Query{}, false
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		h.badRequest(w, r, err)
		return nil, feed.Query{}, false
	}
	if stream {
		if f := v.Get("format"); f != "" && f != "ndjson" {
			h.badRequestDetail(w, r, errors.New("the stream's format is ndjson"))
			return nil, feed.Query{}, false
		}
		v.Del("format")
	}
	q, err := feed.ParseQuery(l, v, h.cfg.Now())
	if err != nil {
		h.badRequestDetail(w, r, err)
		return nil, feed.Query{}, false
	}
	return v, q, true
}

// startFeed sends a feed's headers and takes one of the source's stream slots; HEAD ends
// there.
func (h *handler) startFeed(w http.ResponseWriter, r *http.Request, contentType string) (s *streamer, release func(), ok bool) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil, nil, false
	}
	release, ok = h.streams.acquire(r)
	if !ok {
		h.tooManyStreams(w)
		return nil, nil, false
	}
	return newStreamer(w), release, true
}

// endFeed ends a feed: a store too busy before anything went out is a 503 to retry; any
// other failure aborts the response (see endStream).
func (h *handler) endFeed(r *http.Request, s *streamer, err error) {
	if err == nil {
		return
	}
	if errors.Is(err, store.ErrBusy) && s.out.n == 0 {
		s.rw.Header().Set("Retry-After", "5")
		s.rw.Header()["Content-Type"] = contentJSON
		writeError(s.rw, http.StatusServiceUnavailable, "The store is busy; try again shortly.")
		return
	}
	h.endStream(r, s, err, "")
}

// badRequestDetail answers a malformed query of a route the reference product lacks (feeds,
// analytics) with the contract's message and, for the operator writing a script, what was
// wrong.
func (h *handler) badRequestDetail(w http.ResponseWriter, r *http.Request, err error) {
	h.cfg.Log.Debug("API: bad request", "path", r.URL.Path, "query", r.URL.RawQuery, "err", err)
	writeJSON(w, http.StatusBadRequest, jsonObject{{"error", msgInvalid}, {"detail", err.Error()}})
}
