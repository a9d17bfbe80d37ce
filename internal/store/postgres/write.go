package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/store"
)

// stagingSQL makes a connection's staging table: a batch is copied into it, and inserted
// from it into events with the conflicts skipped (COPY itself cannot skip them).
const stagingSQL = `CREATE TEMP TABLE IF NOT EXISTS staging (
	ord                BIGINT NOT NULL,
	event_uuid         TEXT NOT NULL,
	event_timestamp    TEXT NOT NULL,
	app_name           TEXT NOT NULL,
	app_version        TEXT NOT NULL,
	created_by_node_id TEXT NOT NULL,
	collected_method   TEXT NOT NULL,
	transport_type     TEXT NOT NULL,
	source_ip          TEXT NOT NULL,
	source_port        INT NOT NULL,
	destination_ip     TEXT NOT NULL,
	destination_port   INT NOT NULL,
	called_number      TEXT NOT NULL,
	sip_method         TEXT NOT NULL,
	sip_user_agent     TEXT NOT NULL,
	sip_message        BYTEA NOT NULL,
	sip_message_length INT NOT NULL,
	from_peer          BOOLEAN NOT NULL,
	peer_id            TEXT NOT NULL,
	envelope           BYTEA,
	source_verified    BOOLEAN NOT NULL,
	tool               TEXT NOT NULL,
	ua_spoofed         BOOLEAN NOT NULL,
	payload            TEXT NOT NULL,
	repeat_count       BIGINT NOT NULL
) ON COMMIT DELETE ROWS`

// eventColumns are the columns of events a batch writes and a read returns, in order.
var eventColumns = []string{"event_uuid", "event_timestamp", "app_name", "app_version", "created_by_node_id",
	"collected_method", "transport_type", "source_ip", "source_port", "destination_ip", "destination_port",
	"called_number", "sip_method", "sip_user_agent", "sip_message", "sip_message_length", "from_peer", "peer_id",
	"envelope", "source_verified", "tool", "ua_spoofed", "payload", "repeat_count"}

var (
	eventList   = strings.Join(eventColumns, ", ")
	stagingCols = append([]string{"ord"}, eventColumns...)
	insertSQL   = `INSERT INTO events (` + eventList + `) SELECT ` + eventList + ` FROM staging ORDER BY event_uuid COLLATE "C", event_timestamp COLLATE "C"
		ON CONFLICT (event_uuid, event_timestamp) DO NOTHING RETURNING event_uuid, event_timestamp`
)

// text makes a string storable in a TEXT column, which cannot hold NUL (PostgreSQL refuses
// the whole statement): NUL becomes U+FFFD. The message itself is stored as bytes, whole;
// the short fields an attacker may fill with NUL (number, User-Agent) are not kept exact.
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// maxWriteTries bounds the tries of a batch that meets a serialization failure (a database
// whose default isolation is serializable) or a deadlock (rows are locked in one order by
// every writer, so none is expected; a retry is the safety net).
const maxWriteTries = 8

// Write stores the batch in one transaction (it implements hub.Sink).
//
// An event holding a value the database refuses for good (a data exception: text that is not
// UTF-8 in a field nothing checks) would fail its batch at every retry and stall the queue
// behind it: the batch is then written an event at a time up to that one, which the hub
// counts as refused (hub.BadEventError) before it goes on with the rest.
func (s *Store) Write(ctx context.Context, batch []*event.Event) error {
	_, err := s.WriteCount(ctx, batch)
	if !refused(err) {
		return err
	}
	for i := range batch {
		if _, err := s.WriteCount(ctx, batch[i:i+1]); err != nil {
			if refused(err) {
				return &hub.BadEventError{Index: i, Err: err}
			}
			return &hub.PartialError{Done: i, Err: err}
		}
	}
	return nil
}

// refused says whether err is PostgreSQL's refusal of a value (SQLSTATE class 22).
func refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}

// WriteCount is Write that also says how many events of the batch were new to the database
// (the others were stored before, by this node or another): only those are counted in the
// aggregates, so a batch written again after a lost acknowledgement counts nothing twice.
func (s *Store) WriteCount(ctx context.Context, batch []*event.Event) (int, error) {
	if s.readOnly {
		return 0, fmt.Errorf("database %s is open read-only", s.where)
	}
	if len(batch) == 0 {
		return 0, nil
	}
	if err := s.ensurePartitions(ctx, batch); err != nil {
		return 0, err
	}
	rows := make([][]any, len(batch))
	for i, e := range batch {
		var env []byte
		if e.Sealed != nil {
			env = e.Sealed
		}
		rows[i] = []any{int64(i), text(e.UUID), text(e.Timestamp), text(e.AppName), text(e.AppVersion), text(e.NodeID),
			text(e.CollectedMethod), text(e.Transport), text(e.SourceIP), int32(e.SourcePort), text(e.DestinationIP),
			int32(e.DestinationPort), text(e.CalledNumber), text(e.SIPMethod), text(e.SIPUserAgent), []byte(e.SIPMessage),
			int32(e.SIPMessageLength), e.FromPeer, text(e.Peer), env, e.SourceVerified, text(e.Tool), e.UASpoofed,
			store.PayloadJSON(e.Payload), e.RepeatCount}
	}
	for try := 1; ; try++ {
		added, err := s.writeOnce(ctx, batch, rows)
		if err == nil {
			return added, nil
		}
		var pe *pgconn.PgError
		if try < maxWriteTries && ctx.Err() == nil && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") {
			// The other writer goes on once this one rolled back; a random pause keeps two
			// from meeting again in step.
			time.Sleep(time.Duration(rand.Int64N(int64(try)*int64(20*time.Millisecond))) + time.Millisecond)
			continue
		}
		return 0, fmt.Errorf("store %d events in %s: %w", len(batch), s.where, err)
	}
}

// writeOnce is one try of a batch: the events, then the aggregates of the new ones, in one
// transaction. Rows are locked in one order by every writer: events, peers' reports, IPs,
// numbers, match keys, campaign heads, hourly and minute counts, totals; each in key order
// (events by UUID, so that two nodes writing the same peer events never deadlock: their ids
// then follow UUID order within a batch, which for UUIDv7 is the order they were made in).
func (s *Store) writeOnce(ctx context.Context, batch []*event.Event, rows [][]any) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"staging"}, stagingCols, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	type stored struct{ uuid, ts string }
	inserted := map[stored]bool{}
	res, err := tx.Query(ctx, insertSQL)
	if err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	for res.Next() {
		var k stored
		if err := res.Scan(&k.uuid, &k.ts); err != nil {
			return 0, err
		}
		inserted[k] = true
	}
	if err := res.Err(); err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	if len(inserted) == 0 {
		return 0, tx.Commit(ctx) // all stored before: nothing to count
	}
	var w batchWrite
	w.init(s.labeler)
	added := 0
	for _, e := range batch {
		k := stored{text(e.UUID), text(e.Timestamp)}
		if !inserted[k] {
			continue // stored before, or twice in this batch: counted once
		}
		delete(inserted, k)
		added++
		w.add(e)
	}
	// The change sequence: this transaction's id (see ChangeSeq).
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&w.seq); err != nil {
		return 0, err
	}
	if err := w.write(ctx, tx); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return added, nil
}

// batchWrite is what a batch's new events add to the aggregates.
type batchWrite struct {
	labeler store.Labeler
	seq     int64
	ips     map[string]*store.Aggregate
	nums    map[string]*store.Aggregate
	peers   map[keyPeer]bool
	counts  map[countKey]int64
	minutes map[int64]int64
	runs    map[campaignKey]*run
	// Labels of the sources and numbers met in the batch: a scan repeats them.
	countries map[string]string
	infos     map[string]store.NumberInfo
}

type keyPeer struct {
	list      store.List
	key, peer string
}

type countKey struct {
	dim         store.Dimension
	hour, value string
}

type campaignKey struct{ ip, tool string }

// run is a batch's events from one source by one tool.
type run struct {
	country, agent string
	times          []string
	weights        []int64
}

func (w *batchWrite) init(l store.Labeler) {
	*w = batchWrite{labeler: l, ips: map[string]*store.Aggregate{}, nums: map[string]*store.Aggregate{},
		peers: map[keyPeer]bool{}, counts: map[countKey]int64{}, minutes: map[int64]int64{},
		runs: map[campaignKey]*run{}, countries: map[string]string{}, infos: map[string]store.NumberInfo{}}
}

// add counts one new event, with its weight (the probes a folded event stands for).
func (w *batchWrite) add(e *event.Event) {
	n := e.Weight()
	ip, num := text(e.SourceIP), text(e.CalledNumber)
	store.AddSighting(w.ips, ip, e)
	isNum := store.CountsAsNumber(e.CalledNumber)
	if isNum {
		store.AddSighting(w.nums, num, e)
	}
	if e.FromPeer && e.Peer != "" {
		kp := keyPeer{store.IPAddresses, ip, text(e.Peer)}
		w.peers[kp] = w.peers[kp] || e.Trusted
		if isNum {
			kp = keyPeer{store.CalledNumbers, num, text(e.Peer)}
			w.peers[kp] = w.peers[kp] || e.Trusted
		}
	}
	// What a peer sends is counted only under the names this version knows.
	tool := event.KnownTool(e.Tool)
	if tool == "" {
		tool = store.UnknownTool
	}
	h := store.HourOf(e.Timestamp)
	w.counts[countKey{store.SIPMethods, h, store.CountedValue(text(e.SIPMethod))}] += n
	w.counts[countKey{store.UserAgents, h, store.CountedValue(text(e.SIPUserAgent))}] += n
	w.counts[countKey{store.Transports, h, text(e.Transport)}] += n
	w.counts[countKey{store.Tools, h, tool}] += n
	if e.UASpoofed {
		w.counts[countKey{store.SpoofedTools, h, tool}] += n
	}
	country := ""
	if w.labeler != nil {
		var ok bool
		if country, ok = w.countries[ip]; !ok {
			country = w.labeler.Country(e.SourceIP)
			w.countries[ip] = country
		}
		if country != "" {
			w.counts[countKey{store.Countries, h, country}] += n
		}
		if isNum {
			info := w.info(num, e.CalledNumber)
			// A number that is no dial string (an injection payload, a name) has no prefix.
			if store.IsTarget(info.Target) {
				prefix := info.Prefix
				if prefix == "" {
					prefix = store.NoPrefix
				}
				w.counts[countKey{store.Prefixes, h, prefix}] += n
				if info.Country != "" {
					w.counts[countKey{store.TargetCountries, h, info.Country}] += n
				}
			}
		}
	}
	for _, p := range event.CountedPayloads(e.Payload) {
		w.counts[countKey{store.Payloads, h, p}] += n
	}
	if t, err := time.Parse(minuteLayout, e.Timestamp[:min(len(e.Timestamp), len(minuteLayout))]); err == nil {
		w.minutes[t.Unix()/60] += n
	}
	k := campaignKey{ip, tool}
	r := w.runs[k]
	if r == nil {
		r = &run{country: country, agent: store.CountedValue(text(e.SIPUserAgent))}
		w.runs[k] = r
	}
	r.times = append(r.times, e.Timestamp)
	r.weights = append(r.weights, n)
}

// info reads a number once per batch.
func (w *batchWrite) info(stored, raw string) store.NumberInfo {
	info, ok := w.infos[stored]
	if !ok {
		info = w.labeler.Number(raw)
		w.infos[stored] = info
	}
	return info
}

// minuteLayout is the prefix of an event_timestamp that names its minute.
const minuteLayout = "2006-01-02 15:04"

// write applies the batch's aggregates in the transaction, in the lock order of writeOnce.
func (w *batchWrite) write(ctx context.Context, tx pgx.Tx) error {
	if err := w.writePeers(ctx, tx); err != nil {
		return fmt.Errorf("update peer sightings: %w", err)
	}
	newIPs, _, err := w.upsertKeys(ctx, tx, store.IPAddresses)
	if err != nil {
		return fmt.Errorf("update IP aggregates: %w", err)
	}
	newNums, added, err := w.upsertKeys(ctx, tx, store.CalledNumbers)
	if err != nil {
		return fmt.Errorf("update number aggregates: %w", err)
	}
	if err := writeNumberKeys(ctx, tx, added); err != nil {
		return fmt.Errorf("update number match keys: %w", err)
	}
	if err := w.writeCampaigns(ctx, tx); err != nil {
		return fmt.Errorf("update campaigns: %w", err)
	}
	if err := w.writeCounts(ctx, tx); err != nil {
		return fmt.Errorf("update statistics: %w", err)
	}
	// The totals row is the one every writer that adds a key shares: it comes last, so
	// that it is held only until the commit.
	if newIPs > 0 || newNums > 0 {
		if _, err := tx.Exec(ctx, `UPDATE totals SET ip_addresses = ip_addresses + $1, called_numbers = called_numbers + $2`,
			newIPs, newNums); err != nil {
			return fmt.Errorf("update totals: %w", err)
		}
	}
	return nil
}

// writePeers records which peers reported which keys, and adds to each key's aggregate the
// peers and trusted peers new to it.
func (w *batchWrite) writePeers(ctx context.Context, tx pgx.Tx) error {
	if len(w.peers) == 0 {
		return nil
	}
	kps := make([]keyPeer, 0, len(w.peers))
	for kp := range w.peers {
		kps = append(kps, kp)
	}
	slices.SortFunc(kps, func(a, b keyPeer) int {
		return cmp.Or(cmp.Compare(a.list, b.list), strings.Compare(a.key, b.key), strings.Compare(a.peer, b.peer))
	})
	lists, keys, peers, trusted := make([]int32, len(kps)), make([]string, len(kps)), make([]string, len(kps)), make([]bool, len(kps))
	for i, kp := range kps {
		lists[i], keys[i], peers[i], trusted[i] = int32(kp.list), kp.key, kp.peer, w.peers[kp]
	}
	// A report new to the table adds a peer (and a trusted one if trusted); a trusted
	// report of a peer known untrusted adds a trusted peer. Other rows are not returned.
	rows, err := tx.Query(ctx, `WITH kp AS (
		INSERT INTO key_peers AS t (list, key, peer_id, trusted)
		SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bool[]) AS u(l, k, p, tr)
		ORDER BY l, k COLLATE "C", p COLLATE "C"
		ON CONFLICT (list, key, peer_id) DO UPDATE SET trusted = true WHERE excluded.trusted AND NOT t.trusted
		RETURNING list, key, xmax = 0 AS added, trusted)
		SELECT list, key, count(*) FILTER (WHERE added), count(*) FILTER (WHERE trusted) FROM kp GROUP BY list, key`,
		lists, keys, peers, trusted)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var l int32
		var key string
		var added, trust int64
		if err := rows.Scan(&l, &key, &added, &trust); err != nil {
			return err
		}
		m := w.ips
		if store.List(l) == store.CalledNumbers {
			m = w.nums
		}
		if a := m[key]; a != nil {
			a.Peers += added
			a.TrustedPeers += trust
		}
	}
	return rows.Err()
}

// upsertKeys adds the batch's aggregates of list l, in key order, and returns how many keys
// were new, and for numbers which.
func (w *batchWrite) upsertKeys(ctx context.Context, tx pgx.Tx, l store.List) (int64, []string, error) {
	m, table, key := w.ips, "ip_addresses", "ip_address"
	if l == store.CalledNumbers {
		m, table, key = w.nums, "called_numbers", "called_number"
	}
	if len(m) == 0 {
		return 0, nil, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	n := len(keys)
	first, last := make([]string, n), make([]string, n)
	var cols [8][]int64
	for i := range cols {
		cols[i] = make([]int64, n)
	}
	var target, tcountry, ttype []string
	if l == store.CalledNumbers {
		target, tcountry, ttype = make([]string, n), make([]string, n), make([]string, n)
	}
	for i, k := range keys {
		a := m[k]
		first[i], last[i] = a.FirstSeen, a.LastSeen
		for j, v := range []int64{a.Count, a.Local, a.Peers, a.TrustedPeers, a.Verified, a.VerifiedLocal, a.VerifiedTrusted} {
			cols[j][i] = v
		}
		if target != nil && w.labeler != nil {
			// Kept only when the number is new (the update leaves it alone).
			if info := w.info(k, k); store.IsTarget(info.Target) {
				target[i], tcountry[i], ttype[i] = info.Target, info.Country, info.Type
			}
		}
	}
	extraCols, extraVals, extraNames, extraSel := "", "", "", ""
	args := []any{keys, first, last, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], w.seq}
	if target != nil {
		extraCols, extraVals = `, target, target_country, target_type`, `, $12::text[], $13::text[], $14::text[]`
		extraNames, extraSel = `, tg, tc, tt`, `, tg, tc, tt`
		args = append(args, target, tcountry, ttype)
	}
	// xmax = 0 marks the rows the upsert inserted (an updated row carries the lock the
	// conflict took): an implementation detail, but a stable one, and the totals it feeds are
	// checked by the tests with writers at once.
	q := `WITH up AS (
		INSERT INTO ` + table + ` AS t (` + key + `, first_seen, last_seen, seen_count, local_count, peers, trusted_peers,
			verified_count, verified_local, verified_trusted, seq` + extraCols + `)
		SELECT k, f, l, n, lc, p, tp, v, vl, vt, $11::bigint` + extraSel + `
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
			$8::bigint[], $9::bigint[], $10::bigint[]` + extraVals + `) AS u(k, f, l, n, lc, p, tp, v, vl, vt` + extraNames + `)
		ORDER BY k COLLATE "C"
		ON CONFLICT (` + key + `) DO UPDATE SET
			first_seen       = least(t.first_seen, excluded.first_seen),
			last_seen        = greatest(t.last_seen, excluded.last_seen),
			seen_count       = t.seen_count + excluded.seen_count,
			local_count      = t.local_count + excluded.local_count,
			peers            = t.peers + excluded.peers,
			trusted_peers    = t.trusted_peers + excluded.trusted_peers,
			verified_count   = t.verified_count + excluded.verified_count,
			verified_local   = t.verified_local + excluded.verified_local,
			verified_trusted = t.verified_trusted + excluded.verified_trusted,
			seq              = excluded.seq
		RETURNING ` + key + ` AS k, xmax = 0 AS added)
		SELECT k FROM up WHERE added`
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return 0, nil, err
	}
	added, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, nil, err
	}
	return int64(len(added)), added, nil
}
