package api

import (
	"net"
	"net/http"
	"net/url"

	"github.com/dialtrap/dialtrap/internal/hits"
	"github.com/dialtrap/dialtrap/internal/store"
)

// maxHitsPage bounds a /hits page.
const maxHitsPage = 1000

// HitRecorder keeps the lookups that matched (internal/hits.Recorder).
type HitRecorder interface {
	// Record must not block: it runs on the lookup path.
	Record(hits.Hit)
	// Page returns how many hits were recorded and the kept ones from offset on, newest
	// first, at most limit of them (0: all; below 0: none, the total alone).
	Page(limit, offset int) (total uint64, page []hits.Hit)
}

// recordHit tells Config.Hits that the lookup of value (kind hits.KindIP or KindNumber)
// matched a.
func (h *handler) recordHit(r *http.Request, kind, value string, a store.Aggregate) {
	if h.cfg.Hits == nil {
		return
	}
	client := r.RemoteAddr
	if host, _, err := net.SplitHostPort(client); err == nil {
		client = host
	}
	h.cfg.Hits.Record(hits.Hit{Kind: kind, Value: value, Matched: a.Key, SeenCount: a.Count,
		SeenLocally: a.Local > 0, SeenByPeers: a.Peers, SeenByTrustedPeers: a.TrustedPeers, SeenLast: a.LastSeen,
		Client: client, Token: TokenName(r.Context()), Source: hits.SourceAPI})
}

// hits serves /hits: the lookups that matched, newest first.
func (h *handler) hits(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Hits == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	var limit, offset int
	if err == nil && v.Get("limit") != "" {
		limit, err = bounded(v.Get("limit"), 0)
	}
	if err == nil && v.Get("offset") != "" {
		offset, err = bounded(v.Get("offset"), 0)
	}
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	switch {
	case v.Get("limit") == "":
		limit = 100
	case limit == 0:
		limit = -1 // the total alone: Page copies nothing
	case limit > maxHitsPage:
		limit = maxHitsPage // a page is copied under the lock lookups take
	}
	total, page := h.cfg.Hits.Page(limit, offset)
	writeJSON(w, http.StatusOK, struct {
		Total uint64     `json:"hits_total"`
		Hits  []hits.Hit `json:"hits"`
	}{total, page})
}
