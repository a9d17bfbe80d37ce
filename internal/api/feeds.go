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
		if h.cfg.Feeds == nil {
			writeError(w, http.StatusNotFound, msgNotFoundRoute)
			return
		}
		v, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			h.badRequest(w, r, err)
			return
		}
		now := h.cfg.Now()
		q, err := feed.ParseQuery(l, v, now)
		if err != nil {
			h.badFeedRequest(w, r, err)
			return
		}
		w.Header().Set("Content-Type", feed.ContentType(q.Format))
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		release, ok := h.streams.acquire(r)
		if !ok {
			h.tooManyStreams(w)
			return
		}
		defer release()
		s := newStreamer(w)
		err = feed.Render(r.Context(), s.out, h.cfg.Feeds, q, h.cfg.Guards, now, func() {
			s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		})
		if err != nil {
			if errors.Is(err, store.ErrBusy) && s.out.n == 0 {
				w.Header().Set("Retry-After", "5")
				w.Header()["Content-Type"] = contentJSON
				writeError(w, http.StatusServiceUnavailable, "The store is busy; try again shortly.")
				return
			}
			h.endStream(r, s, err, "")
		}
	}
}

// badFeedRequest answers a malformed feed query with the contract's message and, for the
// operator writing a firewall script, what was wrong.
func (h *handler) badFeedRequest(w http.ResponseWriter, r *http.Request, err error) {
	h.cfg.Log.Debug("API: bad feed request", "path", r.URL.Path, "query", r.URL.RawQuery, "err", err)
	writeJSON(w, http.StatusBadRequest, jsonObject{{"error", msgInvalid}, {"detail", err.Error()}})
}

// feedStream serves /feeds/stream: the address set, then its changes as they happen (see
// feed.Serve for the lines), until the client or the server goes.
func (h *handler) feedStream(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Feeds == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	if f := v.Get("format"); f != "" && f != "ndjson" {
		h.badFeedRequest(w, r, errors.New("the stream's format is ndjson"))
		return
	}
	v.Del("format")
	q, err := feed.ParseQuery(store.IPAddresses, v, h.cfg.Now())
	var heartbeat time.Duration
	if err == nil && v.Get("heartbeat") != "" {
		heartbeat, err = time.ParseDuration(v.Get("heartbeat"))
		if err == nil && (heartbeat < time.Second || heartbeat > 5*time.Minute) {
			err = errors.New("heartbeat must be from 1s to 5m")
		}
	}
	if err != nil {
		h.badFeedRequest(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	// Proxies that buffer (nginx) would hold the lines back.
	w.Header().Set("X-Accel-Buffering", "no")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	release, ok := h.streams.acquire(r)
	if !ok {
		h.tooManyStreams(w)
		return
	}
	defer release()
	s := newStreamer(w)
	extend := func() { s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second)) }
	extend()
	err = feed.Serve(r.Context(), s.w, h.cfg.Feeds, feed.StreamOptions{
		Query: q, Cursor: v.Get("cursor"), Guards: h.cfg.Guards, Heartbeat: heartbeat,
		Poll: h.cfg.FeedPoll, Now: h.cfg.Now, Done: h.cfg.done,
		Flush: func() error {
			if err := s.w.Flush(); err != nil {
				return err
			}
			return s.rc.Flush()
		},
		Progress: extend,
	})
	if err != nil {
		if errors.Is(err, store.ErrBusy) && s.out.n == 0 {
			w.Header().Set("Retry-After", "5")
			w.Header()["Content-Type"] = contentJSON
			writeError(w, http.StatusServiceUnavailable, "The store is busy; try again shortly.")
			return
		}
		h.endStream(r, s, err, "")
		return
	}
	s.w.Flush()
}
