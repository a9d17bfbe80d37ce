package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

const aggregateColumns = `first_seen, last_seen, seen_count, local_count, peers, trusted_peers, verified_count, verified_local, verified_trusted`

// lists maps a store.List to its table and key column.
var lists = map[store.List]struct{ table, key string }{
	store.IPAddresses:   {"ip_addresses", "ip_address"},
	store.CalledNumbers: {"called_numbers", "called_number"},
}

func listOf(l store.List) (table, key string, err error) {
	t, ok := lists[l]
	if !ok {
		return "", "", fmt.Errorf("unknown list %d", l)
	}
	return t.table, t.key, nil
}

// IP returns the aggregate of one source IP; ok is false when it was never seen.
func (s *Store) IP(ctx context.Context, ip string) (store.Aggregate, bool, error) {
	return s.lookup(ctx, `SELECT ip_address, `+aggregateColumns+` FROM ip_addresses WHERE ip_address = $1`, text(ip))
}

// Number returns the aggregate of one called number, matched exactly.
func (s *Store) Number(ctx context.Context, n string) (store.Aggregate, bool, error) {
	return s.lookup(ctx, `SELECT called_number, `+aggregateColumns+` FROM called_numbers WHERE called_number = $1`, text(n))
}

// lookup runs a one-row query; pgx prepares it on each connection the first time (its
// statement cache), so a lookup is one round trip.
func (s *Store) lookup(ctx context.Context, q, key string) (store.Aggregate, bool, error) {
	rows, err := s.pool.Query(ctx, q, key)
	if err != nil {
		return store.Aggregate{}, false, fmt.Errorf("look up %s in %s: %w", key, s.where, err)
	}
	all, err := collectAggregates(rows)
	if err != nil {
		return store.Aggregate{}, false, fmt.Errorf("look up %s in %s: %w", key, s.where, err)
	}
	if len(all) == 0 {
		return store.Aggregate{}, false, nil
	}
	return all[0], true, nil
}

func collectAggregates(rows pgx.Rows) ([]store.Aggregate, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Aggregate, error) {
		var a store.Aggregate
		err := r.Scan(&a.Key, &a.FirstSeen, &a.LastSeen, &a.Count, &a.Local, &a.Peers, &a.TrustedPeers, &a.Verified,
			&a.VerifiedLocal, &a.VerifiedTrusted)
		return a, err
	})
}

// MatchNumbers returns the stored numbers n matches nationally: the number itself, and every
// number sharing one of its national-match keys, newest first.
func (s *Store) MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error) {
	keys := event.NumberQueryKeys(n)
	if keys == nil {
		keys = []string{}
	}
	rows, err := s.pool.Query(ctx, `SELECT called_number, `+aggregateColumns+` FROM called_numbers
		WHERE called_number = $1 OR called_number IN (SELECT called_number FROM number_keys WHERE match_key = ANY($2::text[]))
		ORDER BY last_seen DESC, called_number DESC`, text(n), keys)
	if err != nil {
		return nil, fmt.Errorf("match number %s in %s: %w", n, s.where, err)
	}
	out, err := collectAggregates(rows)
	if err != nil {
		return nil, fmt.Errorf("match number %s in %s: %w", n, s.where, err)
	}
	return out, nil
}

// Count returns how many IPs or numbers were last seen at or after since. The whole list's
// size is kept in the totals row; a window counts the last-seen index range.
func (s *Store) Count(ctx context.Context, l store.List, since string) (int64, error) {
	table, _, err := listOf(l)
	if err != nil {
		return 0, err
	}
	var n int64
	if since == "" {
		err = s.pool.QueryRow(ctx, `SELECT `+table+` FROM totals`).Scan(&n)
	} else {
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE last_seen >= $1`, since).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count %s in %s: %w", table, s.where, err)
	}
	return n, nil
}

// listPage is how many list entries are read at a time.
const listPage = 1000

// Each calls fn for the IPs or numbers o selects, newest first, a page at a time, with no
// transaction open while fn runs (a slow client would hold back vacuum). Pages follow the
// list's order (last seen, key): an entry seen again while the list is read moves ahead of
// the cursor and is missed; none is listed twice. (SQLite's node store reads a long list
// from a snapshot instead; its read-only store pages as this one.)
func (s *Store) Each(ctx context.Context, l store.List, o store.ListOptions, fn func(store.Aggregate) error) error {
	table, key, err := listOf(l)
	if err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("list %s in %s: %w", table, s.where, err) }
	left := o.Limit // 0: no limit
	read := func(q string, args ...any) ([]store.Aggregate, error) {
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		return collectAggregates(rows)
	}
	page, err := read(`SELECT `+key+`, `+aggregateColumns+` FROM `+table+
		` WHERE last_seen >= $1 ORDER BY last_seen DESC, `+key+` DESC LIMIT $2 OFFSET $3`, o.Since, listPage, max(o.Offset, 0))
	for {
		if err != nil {
			return wrap(err)
		}
		if left > 0 && len(page) > left {
			page = page[:left]
		}
		for _, a := range page {
			if err := fn(a); err != nil {
				return err
			}
		}
		if left > 0 {
			if left -= len(page); left == 0 {
				return nil
			}
		}
		if len(page) < listPage {
			return nil
		}
		last := page[len(page)-1]
		page, err = read(`SELECT `+key+`, `+aggregateColumns+` FROM `+table+
			` WHERE last_seen >= $1 AND (last_seen, `+key+`) < ($2, $3)
			ORDER BY last_seen DESC, `+key+` DESC LIMIT $4`, o.Since, last.LastSeen, last.Key, listPage)
	}
}

// Top returns the most frequent values of a dimension since the hour of since, and how many
// distinct values there are.
func (s *Store) Top(ctx context.Context, d store.Dimension, since string, limit int) ([]store.ValueCount, int64, error) {
	from := store.HourOf(since)
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, `SELECT value, sum(seen_count)::bigint AS n, count(*) OVER () FROM event_counts
		WHERE dimension = $1 AND hour >= $2 GROUP BY value ORDER BY n DESC, value LIMIT $3`, int32(d), from, lim)
	if err != nil {
		return nil, 0, fmt.Errorf("read statistics from %s: %w", s.where, err)
	}
	var distinct int64
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ValueCount, error) {
		var v store.ValueCount
		err := r.Scan(&v.Value, &v.Count, &distinct)
		return v, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read statistics from %s: %w", s.where, err)
	}
	return out, distinct, nil
}

// CountEvents returns how many raw events are stored.
func (s *Store) CountEvents(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count events in %s: %w", s.where, err)
	}
	return n, nil
}

// eventPage is how many events are read at a time (at most 16 KiB of message each).
const eventPage = 500

// Events calls fn for every stored event in the order stored (by id), a page at a time
// with no transaction open while fn runs. Events stored meanwhile by this node come after
// (higher ids); with other writers, one whose id was taken before but committed after a page
// was read is missed.
func (s *Store) Events(ctx context.Context, fn func(*event.Event) error) error {
	for after := int64(0); ; {
		page, ids, err := s.readEvents(ctx, `SELECT id, `+eventList+` FROM events WHERE id > $1 ORDER BY id LIMIT $2`, after, eventPage)
		if err != nil {
			return fmt.Errorf("read events from %s: %w", s.where, err)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < eventPage {
			return nil
		}
		after = ids[len(ids)-1]
	}
}

// Recent calls fn for at most limit events after the position (since, afterID) in
// (event_timestamp, id) order, with their Peer and Sealed fields, and each one's id: what a
// peer catching up is served (peer.EventSource).
func (s *Store) Recent(ctx context.Context, since string, afterID int64, limit int, fn func(e *event.Event, id int64) error) error {
	page, ids, err := s.readEvents(ctx, `SELECT id, `+eventList+` FROM events
		WHERE (event_timestamp, id) > ($1, $2) ORDER BY event_timestamp, id LIMIT $3`, since, afterID, limit)
	if err != nil {
		return fmt.Errorf("read recent events from %s: %w", s.where, err)
	}
	for i, e := range page {
		if err := fn(e, ids[i]); err != nil {
			return err
		}
	}
	return nil
}

// readEvents reads a query's events and ids into memory.
func (s *Store) readEvents(ctx context.Context, q string, args ...any) ([]*event.Event, []int64, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var events []*event.Event
	var ids []int64
	for rows.Next() {
		var e event.Event
		var id int64
		var msg []byte
		var sport, dport, mlen int32
		var payload string
		if err := rows.Scan(&id, &e.UUID, &e.Timestamp, &e.AppName, &e.AppVersion, &e.NodeID,
			&e.CollectedMethod, &e.Transport, &e.SourceIP, &sport, &e.DestinationIP,
			&dport, &e.CalledNumber, &e.SIPMethod, &e.SIPUserAgent, &msg, &mlen,
			&e.FromPeer, &e.Peer, &e.Sealed, &e.SourceVerified, &e.Tool, &e.UASpoofed, &payload, &e.RepeatCount); err != nil {
			return nil, nil, err
		}
		e.SIPMessage, e.SourcePort, e.DestinationPort, e.SIPMessageLength = string(msg), int(sport), int(dport), int(mlen)
		if e.Payload, err = store.ParsePayload(payload); err != nil {
			return nil, nil, fmt.Errorf("event %s: %w", e.UUID, err)
		}
		events, ids = append(events, &e), append(ids, id)
	}
	return events, ids, rows.Err()
}

// ChangeSeq returns the database's epoch (random, made with the schema) and the change
// sequence up to which every write is visible.
//
// A key's sequence is the id of the transaction that last wrote it. With several writers,
// ids are not taken in commit order: a batch that began earlier can commit after a later one
// was read. So the sequence returned is the oldest transaction id still running, less one:
// every write at or below it has committed (or never will), and a stream that resumes after
// it misses none. Any transaction with an id holds it back until it ends (the writers' are
// short; a session left idle in a transaction stalls the streams, not the writes).
func (s *Store) ChangeSeq(ctx context.Context) (epoch, seq int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT (SELECT value FROM meta WHERE name = 'epoch'),
		pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1`).Scan(&epoch, &seq)
	if err != nil {
		return 0, 0, fmt.Errorf("read the change sequence of %s: %w", s.where, err)
	}
	return epoch, seq, nil
}

// FeedPage returns up to limit keys of list l that f selects, in order o, after the cursor
// after (its fields of that order; the zero FeedItem starts at the beginning). Each page is
// one short query.
func (s *Store) FeedPage(ctx context.Context, l store.List, f store.FeedFilter, o store.FeedOrder, after store.FeedItem, limit int) ([]store.FeedItem, error) {
	table, key, err := listOf(l)
	if err != nil {
		return nil, err
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Since != "" {
		where = append(where, "last_seen >= "+arg(f.Since))
	}
	if f.Until != "" {
		where = append(where, "last_seen <= "+arg(f.Until))
	}
	if f.MinCount > 1 {
		where = append(where, "seen_count >= "+arg(f.MinCount))
	}
	switch f.Source {
	case store.SourceLocal:
		where = append(where, "local_count > 0")
		if f.Verified {
			where = append(where, "verified_local > 0")
		}
	case store.SourceAll:
		if f.Verified {
			where = append(where, "verified_count > 0")
		}
	default:
		where = append(where, "(local_count > 0 OR trusted_peers > 0)")
		if f.Verified {
			where = append(where, "(verified_local > 0 OR verified_trusted > 0)")
		}
	}
	var order string
	switch o {
	case store.BySeq:
		where = append(where, "(seq, "+key+") > ("+arg(after.Seq)+", "+arg(after.Key)+")")
		order = "seq, " + key
	case store.ByLastSeen:
		where = append(where, "(last_seen, "+key+") > ("+arg(after.LastSeen)+", "+arg(after.Key)+")")
		order = "last_seen, " + key
	default:
		where = append(where, key+" > "+arg(after.Key))
		order = key
	}
	cols := `last_seen, seq, seen_count, verified_count`
	if f.KeysOnly {
		cols = `last_seen, seq`
	}
	q := `SELECT ` + key + `, ` + cols + ` FROM ` + table +
		` WHERE ` + strings.Join(where, " AND ") + ` ORDER BY ` + order + ` LIMIT ` + arg(limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read the %s feed from %s: %w", table, s.where, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.FeedItem, error) {
		var it store.FeedItem
		dest := []any{&it.Key, &it.LastSeen, &it.Seq, &it.Count, &it.Verified}
		if f.KeysOnly {
			dest = dest[:3]
		}
		err := r.Scan(dest...)
		return it, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the %s feed from %s: %w", table, s.where, err)
	}
	return out, nil
}

// TopNumbers returns the most called numbers among those last seen at or after since, with
// every call they had, and how many numbers that is.
func (s *Store) TopNumbers(ctx context.Context, since string, limit int) ([]store.ValueCount, int64, error) {
	distinct, err := s.Count(ctx, store.CalledNumbers, since)
	if err != nil {
		return nil, 0, err
	}
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, `SELECT called_number, seen_count FROM called_numbers
		WHERE last_seen >= $1 ORDER BY seen_count DESC, called_number LIMIT $2`, since, lim)
	if err != nil {
		return nil, 0, fmt.Errorf("read the most called numbers from %s: %w", s.where, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ValueCount, error) {
		var v store.ValueCount
		err := r.Scan(&v.Value, &v.Count)
		return v, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read the most called numbers from %s: %w", s.where, err)
	}
	return out, distinct, nil
}

// targetsSQL groups the numbers by target, most called first; $1 and $2 select by last and
// first seen ("" for any). Each request groups anew (SQLite keeps a grouping for 5 s):
// the database may have other writers, and grouping is done where the numbers are.
const targetsSQL = `SELECT target, max(target_country), max(target_type), min(first_seen) AS f, max(last_seen) AS l,
	sum(seen_count)::bigint AS n, count(*), count(*) OVER () FROM called_numbers WHERE target != ''
	GROUP BY target HAVING max(last_seen) >= $1 AND min(first_seen) >= $2 ORDER BY n DESC, target LIMIT $3 OFFSET $4`

// Targets calls fn for the targets selected by o, most called first, and returns how many
// targets o selects (its Limit and Offset aside).
func (s *Store) Targets(ctx context.Context, o store.TargetOptions, fn func(store.Target) error) (int64, error) {
	var lim any
	if o.Limit > 0 {
		lim = o.Limit
	}
	rows, err := s.pool.Query(ctx, targetsSQL, o.Since, o.FirstSince, lim, max(o.Offset, 0))
	if err != nil {
		return 0, fmt.Errorf("read targets from %s: %w", s.where, err)
	}
	var total int64
	page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Target, error) {
		var t store.Target
		err := r.Scan(&t.Target, &t.Country, &t.Type, &t.FirstSeen, &t.LastSeen, &t.Count, &t.Dialled, &total)
		return t, err
	})
	if err != nil {
		return 0, fmt.Errorf("read targets from %s: %w", s.where, err)
	}
	if len(page) == 0 && o.Offset > 0 {
		// Past the end: the window count came with no row.
		return s.CountTargets(ctx, store.TargetOptions{Since: o.Since, FirstSince: o.FirstSince})
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
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM called_numbers WHERE target != ''
		GROUP BY target HAVING max(last_seen) >= $1 AND min(first_seen) >= $2) AS t`, o.Since, o.FirstSince).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count targets in %s: %w", s.where, err)
	}
	return n, nil
}

// Target returns one target's row; ok is false when it was never called.
func (s *Store) Target(ctx context.Context, target string) (t store.Target, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT target, max(target_country), max(target_type), min(first_seen), max(last_seen),
		sum(seen_count)::bigint, count(*) FROM called_numbers WHERE target = $1 AND target != '' GROUP BY target`, text(target)).Scan(
		&t.Target, &t.Country, &t.Type, &t.FirstSeen, &t.LastSeen, &t.Count, &t.Dialled)
	if err == pgx.ErrNoRows {
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("look up target %s in %s: %w", target, s.where, err)
	}
	return t, true, nil
}

// Campaigns calls fn for the campaigns last seen at or after since, newest first.
func (s *Store) Campaigns(ctx context.Context, o store.ListOptions, fn func(store.Campaign) error) error {
	var lim any
	if o.Limit > 0 {
		lim = o.Limit
	}
	rows, err := s.pool.Query(ctx, `SELECT id, source_ip, country, tool, sip_user_agent, first_seen, last_seen, seen_count
		FROM campaigns WHERE last_seen >= $1 ORDER BY last_seen DESC, id DESC LIMIT $2 OFFSET $3`, o.Since, lim, max(o.Offset, 0))
	if err != nil {
		return fmt.Errorf("read campaigns from %s: %w", s.where, err)
	}
	page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Campaign, error) {
		var c store.Campaign
		err := r.Scan(&c.ID, &c.SourceIP, &c.Country, &c.Tool, &c.UserAgent, &c.FirstSeen, &c.LastSeen, &c.Count)
		return c, err
	})
	if err != nil {
		return fmt.Errorf("read campaigns from %s: %w", s.where, err)
	}
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
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM campaigns WHERE last_seen >= $1`, since).Scan(&n); err != nil {
		return 0, fmt.Errorf("count campaigns in %s: %w", s.where, err)
	}
	return n, nil
}

// Timeline returns the events per step from the minute of from to until, oldest first, every
// bucket present (zero-filled). step is a whole number of minutes.
func (s *Store) Timeline(ctx context.Context, from, until time.Time, step time.Duration) ([]store.TimeCount, error) {
	from, until = from.UTC().Truncate(step), until.UTC()
	rows, err := s.pool.Query(ctx, `SELECT (minute - $1) / $3 AS b, sum(seen_count)::bigint
		FROM minute_counts WHERE minute BETWEEN $1 AND $2 GROUP BY b`,
		from.Unix()/60, until.Unix()/60, int64(step/time.Minute))
	if err != nil {
		return nil, fmt.Errorf("read the timeline from %s: %w", s.where, err)
	}
	n := int(until.Sub(from)/step) + 1
	counts := make([]int64, n)
	var b, c int64
	_, err = pgx.ForEachRow(rows, []any{&b, &c}, func() error {
		if b >= 0 && b < int64(n) {
			counts[b] += c
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the timeline from %s: %w", s.where, err)
	}
	out := make([]store.TimeCount, n)
	for i := range out {
		out[i] = store.TimeCount{Time: event.FormatTime(from.Add(time.Duration(i) * step)), Count: counts[i]}
	}
	return out, nil
}
