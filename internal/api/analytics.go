package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/numberintel"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Analytics is what the analytic routes read beyond Store: targets, campaigns and the
// timeline (store/sqlite implements it).
type Analytics interface {
	// Targets calls fn for the targets o selects, most called first, and counts them (Limit
	// and Offset aside); CountTargets only counts them; Target reads one.
	Targets(ctx context.Context, o store.TargetOptions, fn func(store.Target) error) (total int64, err error)
	CountTargets(ctx context.Context, o store.TargetOptions) (int64, error)
	Target(ctx context.Context, target string) (store.Target, bool, error)
	// Campaigns calls fn for the campaigns last seen at or after o.Since, newest first.
	Campaigns(ctx context.Context, o store.ListOptions, fn func(store.Campaign) error) error
	CountCampaigns(ctx context.Context, since string) (int64, error)
	// TopNumbers returns the most called numbers among those last seen at or after since
	// (all their calls counted), at most limit, and how many numbers that is.
	TopNumbers(ctx context.Context, since string, limit int) ([]store.ValueCount, int64, error)
	// Timeline counts events per step from the start of from's step to until.
	Timeline(ctx context.Context, from, until time.Time, step time.Duration) ([]store.TimeCount, error)
}

// FreshWindow is how recently a target must first have been called to be "fresh":
// fraudsters test-dial a number before they pump traffic to it.
const FreshWindow = 24 * time.Hour

// Bounds of the analytic routes: lists read into memory are capped, and a timeline has at
// most a day of minutes.
const (
	defaultPage  = 100
	maxPage      = 10000
	maxOffset    = 100000
	maxTimeSteps = 1440
)

// timelineSteps are the steps /stats/timeline offers.
var timelineSteps = map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
	"1h": time.Hour, "1d": 24 * time.Hour}

func (h *handler) analyticsOff(w http.ResponseWriter) bool {
	if h.cfg.Analytics == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return true
	}
	return false
}

// page reads a list query whose page is read into memory: limit defaults to defaultPage
// and may not exceed maxPage.
func (h *handler) page(w http.ResponseWriter, r *http.Request) (query, bool) {
	q, err := h.parseQuery(r)
	if err == nil && q.opts.Limit > maxPage {
		err = fmt.Errorf("limit: at most %d", maxPage)
	}
	if err != nil {
		h.badRequestDetail(w, r, err)
		return q, false
	}
	if q.opts.Limit == 0 && !q.none {
		q.opts.Limit = defaultPage
	}
	return q, true
}

// tools serves /stats/tools: events by the tool their shape names, and how many of them
// carried a User-Agent naming another.
func (h *handler) tools(w http.ResponseWriter, r *http.Request) {
	q, limit, ok := h.statsQuery(w, r)
	if !ok {
		return
	}
	vals, distinct, err := h.cfg.Store.Top(r.Context(), store.Tools, q.opts.Since, limit)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	spoofed, _, err := h.cfg.Store.Top(r.Context(), store.SpoofedTools, q.opts.Since, 0)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	bySpoof := map[string]int64{}
	for _, v := range spoofed {
		bySpoof[v.Value] = v.Count
	}
	if q.none {
		vals = nil
	}
	items := make([]jsonObject, 0, len(vals))
	for _, v := range vals {
		items = append(items, jsonObject{{"tool", v.Value}, {"seen_count", count(v.Count)}, {"ua_spoofed_count", count(bySpoof[v.Value])}})
	}
	doc := sinceDoc(q.opts.Since, true)
	writeJSON(w, http.StatusOK, append(doc, field{"tools_total", distinct}, field{"tools", items}))
}

// numbers serves /stats/numbers: the most called numbers among those last seen since.
func (h *handler) numbers(w http.ResponseWriter, r *http.Request) {
	if h.analyticsOff(w) {
		return
	}
	q, limit, ok := h.statsQuery(w, r)
	if !ok {
		return
	}
	if limit > maxPage { // the list is read into memory, and scans invent numbers at will
		h.badRequestDetail(w, r, fmt.Errorf("limit: at most %d", maxPage))
		return
	}
	vals, distinct, err := h.cfg.Analytics.TopNumbers(r.Context(), q.opts.Since, limit)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	if q.none {
		vals = nil
	}
	doc := sinceDoc(q.opts.Since, false)
	writeJSON(w, http.StatusOK, append(doc, field{"called_numbers_total", distinct}, field{"called_numbers", valueCounts(vals, "called_number")}))
}

type target struct {
	Target    string `json:"target"`
	Country   string `json:"country"`
	Type      string `json:"type"`
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
	Count     string `json:"seen_count"`
	Dialled   int64  `json:"dialled_count"`
	Fresh     bool   `json:"fresh"`
}

// targets serves /stats/targets: the numbers behind the dial-out prefixes, most called
// first; ?fresh=24h keeps those first called within that window.
func (h *handler) targets(w http.ResponseWriter, r *http.Request) {
	if h.analyticsOff(w) {
		return
	}
	q, ok := h.page(w, r)
	if !ok {
		return
	}
	if q.opts.Offset > maxOffset { // the store holds offset+limit targets to page
		h.badRequestDetail(w, r, fmt.Errorf("offset: at most %d", maxOffset))
		return
	}
	now := h.cfg.Now()
	o := store.TargetOptions{Since: q.opts.Since, Limit: q.opts.Limit, Offset: q.opts.Offset}
	if s := queryValue(r, "fresh"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			h.badRequestDetail(w, r, fmt.Errorf("fresh %q is not a positive duration such as 24h", s))
			return
		}
		o.FirstSince = event.FormatTime(now.Add(-d))
	}
	freshFrom := event.FormatTime(now.Add(-FreshWindow))
	items := []target{}
	var total int64
	var err error
	if q.none {
		total, err = h.cfg.Analytics.CountTargets(r.Context(), o)
	} else {
		total, err = h.cfg.Analytics.Targets(r.Context(), o, func(t store.Target) error {
			items = append(items, target{t.Target, t.Country, t.Type, t.FirstSeen, t.LastSeen, count(t.Count), t.Dialled, t.FirstSeen >= freshFrom})
			return nil
		})
	}
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	doc := sinceDoc(q.opts.Since, false)
	writeJSON(w, http.StatusOK, append(doc, field{"targets_total", total}, field{"targets", items}))
}

type campaign struct {
	SourceIP  string `json:"source_ip"`
	Country   string `json:"country"`
	Tool      string `json:"tool"`
	UserAgent string `json:"sip_user_agent"`
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
	Count     string `json:"seen_count"`
}

// campaigns serves /campaigns: runs of one source's events by one tool, newest first.
func (h *handler) campaigns(w http.ResponseWriter, r *http.Request) {
	if h.analyticsOff(w) {
		return
	}
	q, ok := h.page(w, r)
	if !ok {
		return
	}
	total, err := h.cfg.Analytics.CountCampaigns(r.Context(), q.opts.Since)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	items := []campaign{}
	if !q.none {
		err = h.cfg.Analytics.Campaigns(r.Context(), q.opts, func(c store.Campaign) error {
			items = append(items, campaign{c.SourceIP, c.Country, c.Tool, c.UserAgent, c.FirstSeen, c.LastSeen, count(c.Count)})
			return nil
		})
		if err != nil {
			h.storeFailed(w, r, err)
			return
		}
	}
	doc := sinceDoc(q.opts.Since, false)
	writeJSON(w, http.StatusOK, append(doc, field{"campaigns_total", total}, field{"campaigns", items}))
}

// timeline serves /stats/timeline: events per step (?step=1m, 5m, 15m, 1h, 1d) from since
// (default: 60 steps back) to now, oldest first, every step present.
func (h *handler) timeline(w http.ResponseWriter, r *http.Request) {
	if h.analyticsOff(w) {
		return
	}
	q, err := h.parseQuery(r)
	if err != nil {
		h.badRequestDetail(w, r, err)
		return
	}
	name := queryValue(r, "step")
	if name == "" {
		name = "1m"
	}
	step, ok := timelineSteps[name]
	if !ok {
		h.badRequestDetail(w, r, fmt.Errorf("step %q is not one of 1m, 5m, 15m, 1h, 1d", name))
		return
	}
	now := h.cfg.Now().UTC()
	from := now.Add(-59 * step)
	if q.opts.Since != "" {
		if from, err = event.ParseTime(q.opts.Since); err != nil {
			h.badRequestDetail(w, r, err)
			return
		}
	}
	from = from.Truncate(step)
	// The current step counts too: a day back at 1m is 1,440 steps and the one under way.
	if from.After(now) || now.Sub(from)/step > maxTimeSteps {
		h.badRequestDetail(w, r, errors.New("since: the window must start in the past and go back at most 1440 steps"))
		return
	}
	tl, err := h.cfg.Analytics.Timeline(r.Context(), from, now, step)
	if err != nil {
		h.storeFailed(w, r, err)
		return
	}
	items := make([]jsonObject, 0, len(tl))
	for _, b := range tl {
		items = append(items, jsonObject{{"time", b.Time}, {"seen_count", count(b.Count)}})
	}
	writeJSON(w, http.StatusOK, jsonObject{{"since", event.FormatTime(from)}, {"until", event.FormatTime(now)},
		{"step", name}, {"timeline", items}})
}

// numberInfo is what /numbers/{n} adds about the number dialled.
type numberInfo struct {
	numberintel.Info
	// Fresh says the target was first called within FreshWindow; TargetCount how often it
	// was called, behind any prefix.
	Fresh       bool   `json:"fresh"`
	TargetCount string `json:"target_seen_count,omitempty"`
}

func (h *handler) numberInfo(ctx context.Context, n string) *numberInfo {
	if h.cfg.NumberInfo == nil {
		return nil
	}
	info := &numberInfo{Info: h.cfg.NumberInfo(n)}
	if !dialString(info.Target) {
		return nil // a SIP user such as "service", an injection payload: nothing to tell
	}
	if h.cfg.Analytics == nil {
		return info
	}
	t, ok, err := h.cfg.Analytics.Target(ctx, info.Target)
	if err != nil {
		// The lookup a PBX asked for is answered; only what the analytics add is left out.
		h.warn.Warn("number_info left out of a lookup: the target could not be read", "err", err)
		return info
	}
	if !ok {
		return info
	}
	info.Fresh = t.FirstSeen >= event.FormatTime(h.cfg.Now().Add(-FreshWindow))
	info.TargetCount = count(t.Count)
	return info
}

// dialString is digits, perhaps after a +: a target numberintel could read.
func dialString(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// sinceDoc starts an answer with the window asked for, if one was: on the hour for the counts
// kept per hour.
func sinceDoc(since string, hourly bool) jsonObject {
	if since == "" {
		return jsonObject{}
	}
	if hourly {
		since = hourStart(since)
	}
	return jsonObject{{"since", since}}
}

func queryValue(r *http.Request, key string) string {
	v, _ := url.ParseQuery(r.URL.RawQuery) // parseQuery has refused a malformed one
	return v.Get(key)
}
