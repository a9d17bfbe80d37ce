package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hits"
	"github.com/dialtrap/dialtrap/internal/store"
)

// query holds the validated query parameters of a request.
type query struct {
	opts     store.ListOptions
	national bool
	none     bool // ?limit=0: the totals without entries
}

// maxLimit bounds ?limit= and ?offset= so that no value overflows anything downstream.
const maxLimit = 1 << 40

// parseQuery reads limit, offset, since and match; any other parameter is ignored, as the
// reference ignores them.
func (h *handler) parseQuery(r *http.Request) (query, error) {
	q := query{national: h.cfg.National}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, fmt.Errorf("query string: %w", err)
	}
	if s := v.Get("limit"); s != "" {
		if q.opts.Limit, err = bounded(s, 0); err != nil {
			return q, fmt.Errorf("limit: %w", err)
		}
		q.none = q.opts.Limit == 0
	}
	if s := v.Get("offset"); s != "" {
		if q.opts.Offset, err = bounded(s, 0); err != nil {
			return q, fmt.Errorf("offset: %w", err)
		}
	}
	if s := v.Get("since"); s != "" {
		if q.opts.Since, err = event.ParseSince(s, h.cfg.Now()); err != nil {
			return q, err
		}
	}
	switch v.Get("match") {
	case "":
	case "exact":
		q.national = false
	case "national":
		q.national = true
	default:
		return q, errors.New("match must be exact or national")
	}
	return q, nil
}

func bounded(s string, lo int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > maxLimit {
		return 0, fmt.Errorf("%q is not a whole number from %d to %d", s, lo, maxLimit)
	}
	return n, nil
}

func (h *handler) badRequest(w http.ResponseWriter, r *http.Request, err error) {
	h.cfg.Log.Debug("API: bad request", "path", r.URL.Path, "query", r.URL.RawQuery, "token", TokenName(r.Context()), "err", err)
	writeError(w, http.StatusBadRequest, msgInvalid)
}

// streamer writes a list response piece by piece in exactly the form writeJSON gives a whole
// document, so a million entries cost a buffer, not a body.
type streamer struct {
	w     *bufio.Writer
	out   *countingWriter // what went to the client so far
	rw    http.ResponseWriter
	rc    *http.ResponseController
	enc   *json.Encoder
	str   bytesBuffer
	n     int
	first bool
}

// bytesBuffer is the scratch space the encoder quotes keys into.
type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func newStreamer(w http.ResponseWriter) *streamer {
	out := &countingWriter{w: w}
	s := &streamer{w: bufio.NewWriterSize(out, 32<<10), out: out, rw: w, rc: http.NewResponseController(w), first: true}
	s.enc = json.NewEncoder(&s.str)
	s.enc.SetEscapeHTML(false)
	return s
}

// quote returns s as a JSON string, escaped as writeJSON escapes it.
func (s *streamer) quote(v string) []byte {
	s.str.b = s.str.b[:0]
	s.enc.Encode(v) // a string always encodes
	return s.str.b[:len(s.str.b)-1]
}

// progress extends the write deadline while the client keeps reading: a slow reader of a
// long list is served; one that stops reading is cut off by the deadline.
func (s *streamer) progress() {
	s.n++
	if s.n%1000 == 0 {
		s.extend()
	}
}

// extend gives the client another 30 s to read what comes next.
func (s *streamer) extend() {
	s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
}

// list serves /ip-addresses or /numbers.
func (h *handler) list(l store.List) http.HandlerFunc {
	name, key := "ip_addresses", "ip_address"
	if l == store.CalledNumbers {
		name, key = "called_numbers", "called_number"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := h.parseQuery(r)
		if err != nil {
			h.badRequest(w, r, err)
			return
		}
		total, err := h.cfg.Store.Count(r.Context(), l, q.opts.Since)
		if err != nil {
			h.storeFailed(w, r, err)
			return
		}
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
		fmt.Fprintf(s.w, "{\n  %q: %d,\n  %q: [", name+"_total", total, name)
		err = h.each(r, l, q, func(a store.Aggregate) error {
			if !s.first {
				s.w.WriteByte(',')
			}
			s.first = false
			s.w.WriteString("\n    {\n      \"" + key + "\": ")
			s.w.Write(s.quote(a.Key))
			s.w.WriteString(",\n      \"seen_last\": \"" + a.LastSeen + "\",\n      \"seen_count\": \"")
			s.w.WriteString(strconv.FormatInt(a.Count, 10))
			s.w.WriteString("\",\n      \"seen_locally\": " + strconv.FormatBool(a.Local > 0))
			s.w.WriteString(",\n      \"seen_by_peers\": " + strconv.FormatInt(a.Peers, 10))
			s.w.WriteString(",\n      \"seen_by_trusted_peers\": " + strconv.FormatInt(a.TrustedPeers, 10))
			s.w.WriteString(",\n      \"verified_count\": " + strconv.FormatInt(a.Verified, 10))
			s.w.WriteString("\n    }")
			s.progress()
			return nil
		})
		h.endStream(r, s, err, "\n  ]\n}")
	}
}

// each streams the entries a list query selects; ?limit=0 selects none.
func (h *handler) each(r *http.Request, l store.List, q query, fn func(store.Aggregate) error) error {
	if q.none {
		return nil
	}
	return h.cfg.Store.Each(r.Context(), l, q.opts, fn)
}

// tooManyStreams answers a source that has its share of lists streaming already.
func (h *handler) tooManyStreams(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "Too many lists are being streamed to this address; try again shortly.")
}

// endStream finishes a streamed body. A store error after the status line has gone out
// cannot become an error status: the connection is aborted instead, so that the client sees
// a broken response rather than a short list that looks whole.
func (h *handler) endStream(r *http.Request, s *streamer, err error, tail string) {
	if errors.Is(err, store.ErrBusy) && s.out.n == 0 {
		// Nothing went out yet: say to come back, rather than cut the connection.
		s.rw.Header().Set("Retry-After", "5")
		s.rw.Header()["Content-Type"] = contentJSON
		writeError(s.rw, http.StatusServiceUnavailable, "Too many long lists are being read; try again shortly.")
		return
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) { // a client that went away is no failure
			h.warn.Error("API: list stream failed", "path", r.URL.Path, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	if !s.first {
		s.w.WriteString(tail)
	} else {
		s.w.WriteString(strings.TrimPrefix(tail, "\n  ")) // an empty list: "[]"
	}
	s.w.Flush()
}

// ipset serves /ipset and /ip-addresses/ipset: one address a line, for ipset restore
// scripts and firewalls.
func (h *handler) ipset(w http.ResponseWriter, r *http.Request) {
	q, err := h.parseQuery(r)
	if err == nil && q.none {
		// No total to give, and a firewall script that took 0 for "no limit" would load an
		// empty blocklist and let every attacker back in.
		err = errors.New("limit=0 selects no address: a blocklist has no total to show")
	}
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	release, ok := h.streams.acquire(r)
	if !ok {
		h.tooManyStreams(w)
		return
	}
	defer release()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	s := newStreamer(w)
	err = h.each(r, store.IPAddresses, q, func(a store.Aggregate) error {
		s.w.WriteString(a.Key)
		s.w.WriteByte('\n')
		s.progress()
		return nil
	})
	h.endStream(r, s, err, "")
}

// found is the body of a successful single lookup: the contract key first, then extras.
type found struct {
	IP        string `json:"bad_actor_found,omitempty"`
	Number    string `json:"phone_number_found,omitempty"`
	FirstSeen string `json:"seen_first"`
	LastSeen  string `json:"seen_last"`
	Count     string `json:"seen_count"`
	provenance
	Match   string   `json:"match,omitempty"`
	Matched []number `json:"matched_numbers,omitempty"`
	// NumberInfo is what the number says: prefix, target, its country and type.
	NumberInfo *numberInfo `json:"number_info,omitempty"`
}

// provenance says where a key was seen: by this node's own trap, and by how many peers
// (distinct nodes whose signed reports are stored), trusted ones among them.
type provenance struct {
	Local        bool  `json:"seen_locally"`
	Peers        int64 `json:"seen_by_peers"`
	TrustedPeers int64 `json:"seen_by_trusted_peers"`
	// Verified counts sightings whose source address was proven (not forged).
	Verified int64 `json:"verified_count"`
}

func provenanceOf(a store.Aggregate) provenance {
	return provenance{Local: a.Local > 0, Peers: a.Peers, TrustedPeers: a.TrustedPeers, Verified: a.Verified}
}

type number struct {
	Number   string `json:"called_number"`
	LastSeen string `json:"seen_last"`
	Count    string `json:"seen_count"`
	provenance
}

func (h *handler) ip(w http.ResponseWriter, r *http.Request) {
	ip, ok := event.ParseIP(r.PathValue("ip"))
	if !ok {
		writeError(w, http.StatusBadRequest, msgInvalid)
		return
	}
	a, ok, err := h.cfg.Store.IP(r.Context(), ip)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	if !ok {
		writeMessage(w, http.StatusNotFound, msgNoBadActor)
		return
	}
	h.recordHit(r, hits.KindIP, ip, a)
	writeJSON(w, http.StatusOK, found{IP: ip, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, Count: count(a.Count), provenance: provenanceOf(a)})
}

func count(n int64) string { return strconv.FormatInt(n, 10) }

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// lookupNumber answers whether n is known: exactly, or under the national match.
func (h *handler) lookupNumber(r *http.Request, n string, national bool) (found, bool, error) {
	if !national || !event.ValidNumber(n) { // a user such as "service" only matches itself
		a, ok, err := h.cfg.Store.Number(r.Context(), n)
		if !ok || err != nil {
			return found{}, false, err
		}
		h.recordHit(r, hits.KindNumber, n, a)
		return found{Number: n, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, Count: count(a.Count), provenance: provenanceOf(a)}, true, nil
	}
	m, err := h.cfg.Store.MatchNumbers(r.Context(), n)
	if len(m) == 0 || err != nil {
		return found{}, false, err
	}
	f := found{Number: n, Match: "national", FirstSeen: m[0].FirstSeen}
	var total int64
	for _, a := range m {
		total += a.Count
		f.FirstSeen = min(f.FirstSeen, a.FirstSeen)
		f.LastSeen = max(f.LastSeen, a.LastSeen)
		// Peers may overlap between numbers: the largest count is the distinct floor.
		f.Local = f.Local || a.Local > 0
		f.Peers = max(f.Peers, a.Peers)
		f.TrustedPeers = max(f.TrustedPeers, a.TrustedPeers)
		f.Verified += a.Verified
		f.Matched = append(f.Matched, number{a.Key, a.LastSeen, count(a.Count), provenanceOf(a)})
	}
	f.Count = count(total)
	// The hit names the newest matching entry, with the counts of all of them.
	h.recordHit(r, hits.KindNumber, n, store.Aggregate{Key: m[0].Key, Count: total, LastSeen: f.LastSeen,
		Local: boolInt(f.Local), Peers: f.Peers, TrustedPeers: f.TrustedPeers})
	return f, true, nil
}

// numberQuery validates the number in the path and the query, answering 400 when either is
// malformed. A number is whatever capture stored as called_number (the user part of a URI:
// digits, a name such as SIPp's "service", an injection payload), so any non-empty UTF-8
// text is asked for; the national match applies to digit strings only.
func (h *handler) numberQuery(w http.ResponseWriter, r *http.Request) (n string, q query, ok bool) {
	n = r.PathValue("n")
	q, err := h.parseQuery(r)
	if err != nil || n == "" || !utf8.ValidString(n) {
		h.badRequest(w, r, errors.Join(err, fmt.Errorf("number %q", n)))
		return "", q, false
	}
	return n, q, true
}

func (h *handler) number(w http.ResponseWriter, r *http.Request) {
	n, q, valid := h.numberQuery(w, r)
	if !valid {
		return
	}
	f, ok, err := h.lookupNumber(r, n, q.national)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	if !ok {
		writeMessage(w, http.StatusNotFound, msgNoNumber)
		return
	}
	f.NumberInfo = h.numberInfo(r.Context(), n)
	writeJSON(w, http.StatusOK, f)
}

// hostedNumber and hostedIP answer in the shape of the hosted lookup service, for PBX
// modules written against it.
func (h *handler) hostedNumber(w http.ResponseWriter, r *http.Request) {
	n, q, valid := h.numberQuery(w, r)
	if !valid {
		return
	}
	_, ok, err := h.lookupNumber(r, n, q.national)
	switch {
	case err != nil:
		h.storeFailed(w, r, err)
	case ok:
		writeMessage(w, http.StatusOK, "Phone Number found.")
	default:
		writeMessage(w, http.StatusNotFound, "Phone Number not found.")
	}
}

func (h *handler) hostedIP(w http.ResponseWriter, r *http.Request) {
	ip, ok := event.ParseIP(r.PathValue("ip"))
	if !ok {
		writeError(w, http.StatusBadRequest, msgInvalid)
		return
	}
	a, ok, err := h.cfg.Store.IP(r.Context(), ip)
	if ok && err == nil {
		h.recordHit(r, hits.KindIP, ip, a)
	}
	switch {
	case err != nil:
		h.storeFailed(w, r, err)
	case ok:
		writeMessage(w, http.StatusOK, "IP Address found.")
	default:
		writeMessage(w, http.StatusNotFound, "IP Address not found.")
	}
}

// defaultTop is how many values /sip-methods, /user-agents and /stats list without ?limit=.
const defaultTop = 10

// top serves /sip-methods and /user-agents: the most frequent values, in a time window whose
// start is rounded down to the hour.
func (h *handler) top(d store.Dimension, name, key string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, limit, ok := h.statsQuery(w, r)
		if !ok {
			return
		}
		vals, distinct, err := h.cfg.Store.Top(r.Context(), d, q.opts.Since, limit)
		if err != nil {
			h.storeFailed(w, r, err)
			return
		}
		if q.none {
			vals = nil
		}
		doc := append(sinceDoc(q.opts.Since, true), field{name + "_total", distinct}, field{name, valueCounts(vals, key)})
		writeJSON(w, http.StatusOK, doc)
	}
}

// statsQuery reads the query of a statistics route and the number of values to list.
func (h *handler) statsQuery(w http.ResponseWriter, r *http.Request) (q query, limit int, ok bool) {
	q, err := h.parseQuery(r)
	if err != nil {
		h.badRequest(w, r, err)
		return q, 0, false
	}
	switch limit = q.opts.Limit; {
	case q.none:
		limit = 1 // the lists are left out; the totals are still counted
	case limit == 0:
		limit = defaultTop
	}
	return q, limit, true
}

// hourStart rounds an event_timestamp down to its hour.
func hourStart(ts string) string { return store.HourOf(ts) + ":00:00.000000000" }

func valueCounts(vals []store.ValueCount, key string) []jsonObject {
	out := make([]jsonObject, 0, len(vals))
	for _, v := range vals {
		out = append(out, jsonObject{{key, v.Value}, {"seen_count", count(v.Count)}})
	}
	return out
}

// stats serves /stats: totals and the leading values of each counted dimension.
func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	q, limit, ok := h.statsQuery(w, r)
	if !ok {
		return
	}
	if q.opts.Since != "" { // counts are kept per hour: the window starts on the hour
		q.opts.Since = hourStart(q.opts.Since)
	}
	ctx := r.Context()
	ips, err := h.cfg.Store.Count(ctx, store.IPAddresses, q.opts.Since)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	nums, err := h.cfg.Store.Count(ctx, store.CalledNumbers, q.opts.Since)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	var tops [3][]store.ValueCount
	for i, d := range []store.Dimension{store.Transports, store.SIPMethods, store.UserAgents} {
		lim := limit
		if d == store.Transports {
			lim = 0 // all three, to sum them
		}
		if tops[i], _, err = h.cfg.Store.Top(ctx, d, q.opts.Since, lim); err != nil {
			h.storeFailed(w, r, err)
			return
		}
	}
	var events int64
	for _, v := range tops[0] {
		events += v.Count
	}
	if q.none {
		tops[1], tops[2] = nil, nil
	}
	doc := append(sinceDoc(q.opts.Since, false), // already on the hour
		field{"events_total", events},
		field{"ip_addresses_total", ips},
		field{"called_numbers_total", nums},
		field{"transport_types", valueCounts(tops[0], "transport_type")},
		field{"sip_methods", valueCounts(tops[1], "sip_method")},
		field{"user_agents", valueCounts(tops[2], "user_agent")},
	)
	if h.cfg.KernelDrops != nil {
		doc = append(doc, field{"udp_receive_drops", h.cfg.KernelDrops()})
	}
	writeJSON(w, http.StatusOK, doc)
}

// jsonObject is an object whose keys keep their order.
type jsonObject []field

type field struct {
	key string
	val any
}

func (o jsonObject) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, f := range o {
		if i > 0 {
			b = append(b, ',')
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := marshal(f.val)
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

// peers serves /peers: this node's peer ID and addresses, and per connected peer what it
// delivered and what was refused.
func (h *handler) peers(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Peers == nil {
		writeError(w, http.StatusNotFound, "Peer-to-peer is off on this node (start it with -p).")
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Peers())
}

// bgp shows the blackhole speaker: sessions, announced prefixes, counters.
func (h *handler) bgp(w http.ResponseWriter, r *http.Request) {
	if h.cfg.BGP == nil {
		writeError(w, http.StatusNotFound, "The BGP blackhole speaker is off on this node (start it with --bgp-neighbor).")
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.BGP(r.Context()))
}

// policy shows the SIP policy agent: its addresses and decisions by outcome.
func (h *handler) policy(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Policy == nil {
		writeError(w, http.StatusNotFound, "The SIP policy agent is off on this node (start it with --policy-addr).")
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Policy())
}
