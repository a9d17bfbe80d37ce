package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// SetLabeler sets what derives events' source countries and number targets for the
// statistics, targets and campaigns. Call it before the first Write; without one, those
// counts are left out (and campaigns have no country).
func (s *Store) SetLabeler(l store.Labeler) { s.labeler = l }

// minuteLayout is the prefix of an event_timestamp that names its minute.
const minuteLayout = "2006-01-02 15:04"

type analyticsStmts struct {
	minute, target                                        *sql.Stmt
	findCampaign, nearCampaign, newCampaign, growCampaign *sql.Stmt
}

type campaignKey struct{ ip, tool string }

// openCampaign is the last campaign of a (source, tool) pair as this writer left it.
type openCampaign struct {
	id          int64
	first, last string
}

// maxOpenCampaigns bounds the campaigns remembered: a flood from many sources costs a
// database read per new source, never unbounded memory.
const maxOpenCampaigns = 1 << 16

// run is a batch's events from one source by one tool, in time order.
type run struct {
	country, agent string
	times          []stamp
}

// stamp is one event of a run: its time and the probes it stands for (event.Weight).
type stamp struct {
	ts string
	w  int64
}

// weight is what the events of ss stand for.
func weight(ss []stamp) int64 {
	var n int64
	for _, s := range ss {
		n += s.w
	}
	return n
}

// analytics is what one batch adds to the analytic tables and the per-hour counts.
type analytics struct {
	minutes map[string]int64
	runs    map[campaignKey]*run
	// A scan sends the same probe over and over: an event with the labels of the one before
	// adds to a run, and a run is counted once, not an event at a time.
	cur labels
	n   int64
	// The last source's country, number's reading and campaign run, for the same reason.
	lastIP, lastCountry string
	lastNumber          string
	lastInfo            store.NumberInfo
	lastKey             campaignKey
	lastRun             *run
}

// labels are the values one event adds to the per-hour counts ("" where it adds none).
type labels struct {
	minute, method, agent, transport, tool, country, prefix, targetCountry string
	spoofed                                                                bool
}

func (a *analytics) add(e *event.Event, l store.Labeler, counts dimensionCounts) {
	if a.minutes == nil {
		a.minutes, a.runs = map[string]int64{}, map[campaignKey]*run{}
	}
	// What a peer sends is counted only under the names this version knows: it cannot add
	// values to the counts (it is stored as sent).
	tool := event.KnownTool(e.Tool)
	if tool == "" {
		tool = store.UnknownTool
	}
	lb := labels{minute: e.Timestamp[:min(len(e.Timestamp), 16)], method: e.SIPMethod, agent: e.SIPUserAgent,
		transport: e.Transport, tool: tool, spoofed: e.UASpoofed}
	if l != nil {
		if e.SourceIP != a.lastIP || a.lastCountry == "" {
			a.lastIP, a.lastCountry = e.SourceIP, l.Country(e.SourceIP)
		}
		lb.country = a.lastCountry
		if store.CountsAsNumber(e.CalledNumber) {
			if e.CalledNumber != a.lastNumber || a.lastNumber == "" {
				a.lastNumber, a.lastInfo = e.CalledNumber, l.Number(e.CalledNumber)
			}
			// A number that is no dial string (an injection payload, a name) has no prefix.
			if store.IsTarget(a.lastInfo.Target) {
				lb.prefix = a.lastInfo.Prefix
				if lb.prefix == "" {
					lb.prefix = store.NoPrefix
				}
				lb.targetCountry = a.lastInfo.Country
			}
		}
	}
	w := e.Weight()
	if a.n > 0 && lb == a.cur {
		a.n += w
	} else {
		a.flush(counts)
		a.cur, a.n = lb, w
	}
	if len(e.Payload) > 0 {
		h := store.HourOf(e.Timestamp)
		for _, p := range event.CountedPayloads(e.Payload) {
			counts[countKey{store.Payloads, h, p}] += w
		}
	}
	k := campaignKey{e.SourceIP, tool}
	if a.lastRun == nil || k != a.lastKey {
		r := a.runs[k]
		if r == nil {
			r = &run{country: lb.country, agent: store.CountedValue(e.SIPUserAgent)}
			a.runs[k] = r
		}
		a.lastKey, a.lastRun = k, r
	}
	a.lastRun.times = append(a.lastRun.times, stamp{e.Timestamp, w})
}

// flush adds the current run of identical labels to the counts. WriteCount calls it once
// more after the batch's last event.
func (a *analytics) flush(counts dimensionCounts) {
	if a.n == 0 {
		return
	}
	lb, n := a.cur, a.n
	a.n = 0
	a.minutes[lb.minute] += n
	h := store.HourOf(lb.minute)
	counts[countKey{store.SIPMethods, h, store.CountedValue(lb.method)}] += n
	counts[countKey{store.UserAgents, h, store.CountedValue(lb.agent)}] += n
	counts[countKey{store.Transports, h, lb.transport}] += n
	counts[countKey{store.Tools, h, lb.tool}] += n
	if lb.spoofed {
		counts[countKey{store.SpoofedTools, h, lb.tool}] += n
	}
	if lb.country != "" {
		counts[countKey{store.Countries, h, lb.country}] += n
	}
	if lb.prefix != "" {
		counts[countKey{store.Prefixes, h, lb.prefix}] += n
	}
	if lb.targetCountry != "" {
		counts[countKey{store.TargetCountries, h, lb.targetCountry}] += n
	}
}

func (s *Store) writeAnalytics(ctx context.Context, tx *sql.Tx, a *analytics, newNumbers []string) error {
	if a.minutes == nil {
		return nil
	}
	st := tx.StmtContext(ctx, s.analytics.minute)
	for m, n := range a.minutes {
		t, err := time.Parse(minuteLayout, m)
		if err != nil {
			continue // not an event_timestamp: Check lets no such event in
		}
		if _, err := st.ExecContext(ctx, t.Unix()/60, n); err != nil {
			return err
		}
	}
	// A number's target is written once, when the number is first stored: the aggregate's
	// later updates leave the target index alone.
	if s.labeler != nil {
		st = tx.StmtContext(ctx, s.analytics.target)
		for _, n := range newNumbers {
			if info := s.labeler.Number(n); store.IsTarget(info.Target) {
				if _, err := st.ExecContext(ctx, n, info.Target, info.Country, info.Type); err != nil {
					return err
				}
			}
		}
	}
	return s.writeCampaigns(ctx, tx, a.runs)
}

// writeCampaigns adds each run to the campaign it continues, or starts one: a pause longer
// than CampaignGap, inside the batch or since the events stored before, starts a new one.
// The latest campaign of each (source, tool) is remembered; a late segment (a peer's
// catch-up, an import) is matched against the campaigns in the database.
func (s *Store) writeCampaigns(ctx context.Context, tx *sql.Tx, runs map[campaignKey]*run) error {
	if s.campaigns == nil || len(s.campaigns) > maxOpenCampaigns {
		s.campaigns = map[campaignKey]openCampaign{}
	}
	latestOf := tx.StmtContext(ctx, s.analytics.findCampaign)
	near := tx.StmtContext(ctx, s.analytics.nearCampaign)
	grow := tx.StmtContext(ctx, s.analytics.growCampaign)
	add := tx.StmtContext(ctx, s.analytics.newCampaign)
	// The cache is updated only once the transaction's statements succeeded; a failed batch
	// is retried whole, and the cache must not remember rows it rolled back.
	pending := map[campaignKey]openCampaign{}
	for k, r := range runs {
		slices.SortFunc(r.times, func(a, b stamp) int { return strings.Compare(a.ts, b.ts) })
		latest, ok := s.campaigns[k]
		if !ok {
			err := latestOf.QueryRowContext(ctx, k.ip, k.tool).Scan(&latest.id, &latest.first, &latest.last)
			switch {
			case err == sql.ErrNoRows:
			case err != nil:
				return fmt.Errorf("find the campaign of %s: %w", k.ip, err)
			default:
				ok = true
			}
		}
		for len(r.times) > 0 {
			// The leading part of the run within the gap of each event before it.
			n := 1
			for n < len(r.times) && !store.Apart(r.times[n-1].ts, r.times[n].ts) {
				n++
			}
			first, last, w := r.times[0].ts, r.times[n-1].ts, weight(r.times[:n])
			r.times = r.times[n:]
			if ok && !store.Apart(latest.last, first) && !store.Apart(last, latest.first) {
				if _, err := grow.ExecContext(ctx, latest.id, first, last, w); err != nil {
					return err
				}
				latest.first, latest.last = min(latest.first, first), max(latest.last, last)
				continue
			}
			if ok && last < latest.first {
				// Older than the latest campaign: it may continue an earlier one.
				var c openCampaign
				err := near.QueryRowContext(ctx, k.ip, k.tool, store.ShiftTime(first, -store.CampaignGap), store.ShiftTime(last, store.CampaignGap)).Scan(&c.id, &c.first, &c.last)
				switch {
				case err == nil:
					if _, err := grow.ExecContext(ctx, c.id, first, last, w); err != nil {
						return err
					}
					continue
				case err != sql.ErrNoRows:
					return fmt.Errorf("find the campaign of %s: %w", k.ip, err)
				}
			}
			res, err := add.ExecContext(ctx, k.ip, k.tool, r.country, r.agent, first, last, w)
			if err != nil {
				return err
			}
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			if !ok || first > latest.last {
				latest, ok = openCampaign{id: id, first: first, last: last}, true
			}
		}
		pending[k] = latest
	}
	for k, o := range pending {
		s.campaigns[k] = o
	}
	return nil
}

// TopNumbers returns the most called numbers among those last seen at or after since, with
// every call they had, and how many numbers that is. The per-key aggregate answers it: a
// count of each number per hour would grow with the numbers a scan invents.
func (s *Store) TopNumbers(ctx context.Context, since string, limit int) ([]store.ValueCount, int64, error) {
	distinct, err := s.Count(ctx, store.CalledNumbers, since)
	if err != nil {
		return nil, 0, err
	}
	lim := int64(-1)
	if limit > 0 {
		lim = int64(limit)
	}
	// No index on the count: one would be rewritten by every batch for every number in it.
	// SQLite keeps the top limit while it reads the numbers of the window.
	rows, err := s.bulk.QueryContext(ctx, `SELECT called_number, seen_count FROM called_numbers
		WHERE last_seen >= ?1 ORDER BY seen_count DESC, called_number LIMIT ?2`, since, lim)
	if err != nil {
		return nil, 0, fmt.Errorf("read the most called numbers from %s: %w", s.path, err)
	}
	defer rows.Close()
	var out []store.ValueCount
	for rows.Next() {
		var v store.ValueCount
		if err := rows.Scan(&v.Value, &v.Count); err != nil {
			return nil, 0, fmt.Errorf("read the most called numbers from %s: %w", s.path, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read the most called numbers from %s: %w", s.path, err)
	}
	return out, distinct, nil
}

// targetsSQL groups the numbers by target; ?1 and ?2 select by last and first seen ("" for
// any). Reading every number with a target is the price of not updating a targets table
// with every batch: about 30 ms for 45,000 numbers (bench/stats).
const targetsSQL = `SELECT target, max(target_country), max(target_type), min(first_seen) AS f, max(last_seen) AS l,
	sum(seen_count) AS n, count(*) FROM called_numbers WHERE target != '' GROUP BY target HAVING l >= ?1 AND f >= ?2`

// targetsTTL is how old a grouping of the numbers by target may be when /stats/targets
// answers from it: grouping 45,000 numbers takes 65-110 ms, and a dashboard or dialtrap top
// asks every few seconds.
const targetsTTL = 5 * time.Second

// maxCachedTargets bounds the targets kept between requests; with more (a flood of invented
// numbers), every request groups the numbers anew and keeps only its page. A variable for
// the tests of that path.
var maxCachedTargets = 100_000

// targetsCache holds every target, most called first, as grouped at a time. No answer comes
// from a grouping older than targetsTTL: a request that finds one regroups. A node serving
// the API also regroups in the background (the filters' goroutine), shortly before the
// grouping expires, while the targets were asked for in the last minute: a dashboard's or
// dialtrap top's requests then never wait for one.
type targetsCache struct {
	mu      sync.Mutex
	at      time.Time
	all     []store.Target
	tooMany bool
	asked   time.Time
	// grouping serialises groupings: concurrent first requests wait for one.
	grouping sync.Mutex
}

func mostCalled(a, b store.Target) int {
	if a.Count != b.Count {
		return cmp.Compare(b.Count, a.Count)
	}
	return strings.Compare(a.Target, b.Target)
}

// allTargets returns every target, most called first; ok is false when there are more than
// maxCachedTargets.
func (s *Store) allTargets(ctx context.Context) (all []store.Target, ok bool, err error) {
	c := &s.targets
	c.mu.Lock()
	c.asked = time.Now()
	fresh := !c.at.IsZero() && time.Since(c.at) < targetsTTL
	all, ok = c.all, !c.tooMany
	c.mu.Unlock()
	if fresh {
		return all, ok, nil
	}
	if err := s.groupAll(ctx, targetsTTL); err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all, !c.tooMany, nil
}

// refreshTargets regroups the targets when they were asked for in the last minute and the
// grouping is about to expire (the background goroutine calls it every second).
func (s *Store) refreshTargets(ctx context.Context) {
	c := &s.targets
	c.mu.Lock()
	early := targetsTTL - 2*filterCheckInterval
	due := !c.asked.IsZero() && time.Since(c.asked) < time.Minute && time.Since(c.at) >= early
	c.mu.Unlock()
	if due {
		s.groupAll(ctx, early) // a failure leaves the last grouping; the next second tries again
	}
}

// groupAll groups every target and keeps the result, unless a grouping younger than maxAge
// is there (another caller's, made while this one waited).
func (s *Store) groupAll(ctx context.Context, maxAge time.Duration) error {
	c := &s.targets
	c.grouping.Lock()
	defer c.grouping.Unlock()
	c.mu.Lock()
	done := !c.at.IsZero() && time.Since(c.at) < maxAge
	c.mu.Unlock()
	if done {
		return nil
	}
	all := []store.Target{}
	tooMany := false
	_, err := s.groupTargets(ctx, store.TargetOptions{}, func(t store.Target) bool {
		if len(all) == maxCachedTargets {
			tooMany = true
			return false
		}
		all = append(all, t)
		return true
	})
	if err != nil {
		return err
	}
	if tooMany {
		all = nil
	}
	slices.SortFunc(all, mostCalled)
	c.mu.Lock()
	c.at, c.all, c.tooMany = time.Now(), all, tooMany
	c.mu.Unlock()
	return nil
}

// groupTargets groups the numbers by target, selected by o's windows, and calls fn for each
// group until it returns false.
func (s *Store) groupTargets(ctx context.Context, o store.TargetOptions, fn func(store.Target) bool) (n int64, err error) {
	rows, err := s.bulk.QueryContext(ctx, targetsSQL, o.Since, o.FirstSince)
	if err != nil {
		return 0, fmt.Errorf("read targets from %s: %w", s.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t store.Target
		if err := rows.Scan(&t.Target, &t.Country, &t.Type, &t.FirstSeen, &t.LastSeen, &t.Count, &t.Dialled); err != nil {
			return 0, fmt.Errorf("read targets from %s: %w", s.path, err)
		}
		n++
		if !fn(t) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read targets from %s: %w", s.path, err)
	}
	return n, nil
}

// Targets calls fn for the targets selected by o, most called first, and returns how many
// targets o selects (its Limit and Offset aside). They come from a grouping at most
// targetsTTL old; with more than maxCachedTargets, from a grouping of their own, keeping at
// most twice Offset+Limit of them while they come.
func (s *Store) Targets(ctx context.Context, o store.TargetOptions, fn func(store.Target) error) (total int64, err error) {
	var page []store.Target
	all, ok, err := s.allTargets(ctx)
	if err != nil {
		return 0, err
	}
	if ok {
		for _, t := range all {
			if t.LastSeen < o.Since || t.FirstSeen < o.FirstSince {
				continue
			}
			if total >= int64(o.Offset) && (o.Limit <= 0 || len(page) < o.Limit) {
				page = append(page, t)
			}
			total++
		}
	} else {
		keep := o.Offset + o.Limit
		if o.Limit <= 0 {
			keep = -1 // all
		}
		total, err = s.groupTargets(ctx, o, func(t store.Target) bool {
			page = append(page, t)
			if keep >= 0 && len(page) >= 2*keep+64 {
				slices.SortFunc(page, mostCalled)
				page = page[:keep]
			}
			return true
		})
		if err != nil {
			return 0, err
		}
		slices.SortFunc(page, mostCalled)
		if keep >= 0 && len(page) > keep {
			page = page[:keep]
		}
		page = page[min(o.Offset, len(page)):]
	}
	for _, t := range page {
		if err := fn(t); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// CountTargets returns how many targets o selects (its Limit and Offset aside).
func (s *Store) CountTargets(ctx context.Context, o store.TargetOptions) (int64, error) {
	o.Limit, o.Offset = 1, 0
	return s.Targets(ctx, o, func(store.Target) error { return nil })
}

// Target returns one target's row; ok is false when it was never called.
func (s *Store) Target(ctx context.Context, target string) (t store.Target, ok bool, err error) {
	err = s.r.QueryRowContext(ctx, `SELECT target, max(target_country), max(target_type), min(first_seen), max(last_seen),
		sum(seen_count), count(*) FROM called_numbers WHERE target = ?1 AND target != '' GROUP BY target`, target).Scan(
		&t.Target, &t.Country, &t.Type, &t.FirstSeen, &t.LastSeen, &t.Count, &t.Dialled)
	if err == sql.ErrNoRows {
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("look up target %s in %s: %w", target, s.path, err)
	}
	return t, true, nil
}

// Campaigns calls fn for the campaigns last seen at or after since, newest first, and
// returns how many there are.
func (s *Store) Campaigns(ctx context.Context, o store.ListOptions, fn func(store.Campaign) error) error {
	lim := int64(-1)
	if o.Limit > 0 {
		lim = int64(o.Limit)
	}
	rows, err := s.bulk.QueryContext(ctx, `SELECT id, source_ip, country, tool, sip_user_agent, first_seen, last_seen, seen_count
		FROM campaigns WHERE last_seen >= ? ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?`, o.Since, lim, o.Offset)
	if err != nil {
		return fmt.Errorf("read campaigns from %s: %w", s.path, err)
	}
	defer rows.Close()
	var page []store.Campaign
	for rows.Next() {
		var c store.Campaign
		if err := rows.Scan(&c.ID, &c.SourceIP, &c.Country, &c.Tool, &c.UserAgent, &c.FirstSeen, &c.LastSeen, &c.Count); err != nil {
			return fmt.Errorf("read campaigns from %s: %w", s.path, err)
		}
		page = append(page, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read campaigns from %s: %w", s.path, err)
	}
	rows.Close()
	for _, c := range page {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// CountCampaigns returns how many campaigns were last seen at or after since.
func (s *Store) CountCampaigns(ctx context.Context, since string) (int64, error) {
	var n int64
	if err := s.bulk.QueryRowContext(ctx, `SELECT count(*) FROM campaigns WHERE last_seen >= ?`, since).Scan(&n); err != nil {
		return 0, fmt.Errorf("count campaigns in %s: %w", s.path, err)
	}
	return n, nil
}

// Timeline returns the events per step from the minute of from to until, oldest first, every
// bucket present (zero-filled). step is a whole number of minutes.
func (s *Store) Timeline(ctx context.Context, from, until time.Time, step time.Duration) ([]store.TimeCount, error) {
	from, until = from.UTC().Truncate(step), until.UTC()
	rows, err := s.bulk.QueryContext(ctx, `SELECT (minute - ?1) / ?3 AS b, sum(seen_count)
		FROM minute_counts WHERE minute BETWEEN ?1 AND ?2 GROUP BY b`,
		from.Unix()/60, until.Unix()/60, int64(step/time.Minute))
	if err != nil {
		return nil, fmt.Errorf("read the timeline from %s: %w", s.path, err)
	}
	defer rows.Close()
	n := int(until.Sub(from)/step) + 1
	counts := make([]int64, n)
	for rows.Next() {
		var b, c int64
		if err := rows.Scan(&b, &c); err != nil {
			return nil, fmt.Errorf("read the timeline from %s: %w", s.path, err)
		}
		if b >= 0 && b < int64(n) {
			counts[b] += c
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the timeline from %s: %w", s.path, err)
	}
	out := make([]store.TimeCount, n)
	for i := range out {
		out[i] = store.TimeCount{Time: event.FormatTime(from.Add(time.Duration(i) * step)), Count: counts[i]}
	}
	return out, nil
}
