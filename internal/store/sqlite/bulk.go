package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Bulk stores a long stream of events (dialtrap import) in few, large transactions instead of
// one per batch of 2,000. It writes what WriteCount writes for the same events: every event
// once, the same aggregates, statistics, analytics and number keys; only the change sequence
// differs (one per transaction, not one per batch).
//
// Why: the events' UUID index and the aggregate tables' indexes take random inserts; every
// commit writes each page it touched to the WAL and the checkpoint copies it again, so many
// small commits rewrite the same pages over and over (a million records in batches of 2,000 wrote 12.5 times the
// database's size). A transaction of tens of thousands of events touches each such page once,
// sums the aggregates of all its events before writing them, and keeps its page cache.
//
// A transaction holds SQLite's write lock while it is open: BulkOptions bounds it, so a node
// writing the same file beside the import waits for one transaction at most, never for the
// whole import. What was committed stays when the import is interrupted; the open
// transaction is rolled back, and importing again stores the rest.
type Bulk struct {
	s   *Store
	o   BulkOptions
	tx  *sql.Tx // nil between transactions
	err error   // the first failure: the bulk is then done

	// The open transaction's sums, written at its commit.
	ips, nums aggregates
	counts    dimensionCounts
	an        analytics
	peers     keyPeers
	events    int   // events given to the open transaction
	bytes     int64 // their messages' bytes
	pending   int64 // of them, those new to the store
	began     time.Time

	sums     *Sums               // the batch's, given to AddSummed
	fresh    []*event.Event      // the batch's new events
	inserted map[string]struct{} // new UUIDs of a chunk with duplicates
	counted  map[string]struct{} // UUIDs of a chunk already counted
	args     []any

	added int64 // events committed as new
}

// BulkOptions bound a bulk's transactions.
type BulkOptions struct {
	// MaxEvents, MaxBytes (of messages) and MaxHold (how long it has been open) end a
	// transaction after the batch that reaches one; 0 takes the defaults.
	MaxEvents int
	MaxBytes  int64
	MaxHold   time.Duration
	// CacheBytes is the writer's page cache while the bulk runs: the random index pages a
	// transaction touches stay in memory instead of being read again; 0 takes the default.
	CacheBytes int64
	// CheckpointBytes is how large the WAL may grow before the bulk's commit copies it
	// into the database; 0 takes the default, -1 keeps SQLite's (4 MB: after every
	// transaction).
	CheckpointBytes int64
}

// Defaults of BulkOptions, measured with bench/import (a million records, 2 cores): a
// transaction is about two seconds of import; five at most, for a slow source or a loaded
// machine (bounded by time alone, transactions got shorter as the machine got busier, and
// wrote more: 3.4 GB instead of 3.2). The page cache is small because SQLite's
// allocator here takes about 2.5 bytes of memory a byte of cache (32 MiB more cache
// measured 80 MiB more RSS); 16 MiB ran as fast as 64. Checkpointing every 256 MiB of WAL instead of after every
// transaction copies an index page rewritten by several transactions once: 13% fewer bytes
// written, 6% faster. A node's writer that commits meanwhile may run that checkpoint itself
// (SQLite's default: once the WAL holds 4 MB); the WAL file is cut back to 64 MiB after it.
const (
	defaultBulkEvents     = 50_000
	defaultBulkBytes      = 48 << 20
	defaultBulkCache      = 16 << 20
	defaultBulkHold       = 5 * time.Second
	defaultBulkCheckpoint = 256 << 20
)

// yieldAfterCommit is how long a bulk leaves the write lock free after each commit. SQLite
// has no queue for its lock: a node's writer waiting for it retries every 100 ms once it has
// waited a third of a second, and would miss a lock that is taken again at once, waiting for
// the whole import. A variable for tests.
var yieldAfterCommit = 110 * time.Millisecond

// BeginBulk starts a bulk write. Close it (it commits what is pending); Abort drops what is
// pending.
func (s *Store) BeginBulk(ctx context.Context, o BulkOptions) (*Bulk, error) {
	if s.w == nil {
		return nil, fmt.Errorf("database %s is open read-only", s.path)
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = defaultBulkEvents
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultBulkBytes
	}
	if o.MaxHold <= 0 {
		o.MaxHold = defaultBulkHold
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultBulkCache
	}
	// On the writer's only connection, for this process (dialtrap import) only.
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", o.CacheBytes>>10)); err != nil {
		return nil, fmt.Errorf("set the page cache of %s: %w", s.path, err)
	}
	if o.CheckpointBytes == 0 {
		o.CheckpointBytes = defaultBulkCheckpoint
	}
	if o.CheckpointBytes > 0 {
		if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", o.CheckpointBytes/4096)); err != nil {
			return nil, fmt.Errorf("set the checkpoints of %s: %w", s.path, err)
		}
	}
	return &Bulk{s: s, o: o, args: make([]any, 0, eventCols*rowSizes[0]),
		inserted: map[string]struct{}{}, counted: map[string]struct{}{}}, nil
}

// Sums are what a batch adds to the aggregates, statistics and analytics when all its events
// are new to the store. Summing is about a tenth of the writer's work; an import sums each batch on
// the goroutine that reads it, and the writer only stores (AddSummed).
type Sums struct {
	ips, nums aggregates
	peers     keyPeers
	counts    dimensionCounts
	an        analytics
	events    int // distinct events summed
}

// Sum sums a batch as WriteCount would if all its events were new; l is the labeler's
// own instance for the caller's goroutine (a labeler is not safe for concurrent use), giving
// what the store's labeler gives.
func Sum(events []*event.Event, l store.Labeler) *Sums {
	x := &Sums{ips: aggregates{}, nums: aggregates{}, peers: keyPeers{}, counts: dimensionCounts{}}
	seen := make(map[string]struct{}, len(events))
	for _, e := range events {
		if _, dup := seen[e.UUID]; dup {
			continue // stored once: the second is not new
		}
		seen[e.UUID] = struct{}{}
		x.events++
		sumEvent(e, l, x.ips, x.nums, x.peers, x.counts, &x.an)
	}
	x.an.flush(x.counts)
	return x
}

// sumEvent adds one new event to sums, as WriteCount does.
func sumEvent(e *event.Event, l store.Labeler, ips, nums aggregates, peers keyPeers, counts dimensionCounts, an *analytics) {
	ips.add(e.SourceIP, e)
	if store.CountsAsNumber(e.CalledNumber) {
		nums.add(e.CalledNumber, e)
	}
	if e.FromPeer && e.Peer != "" {
		peers.add(e)
	}
	an.add(e, l, counts)
}

// AddSummed is Add with the batch's sums made by Sum with a labeler like the store's. When
// some of the events were stored before (an import run again), the sums do not apply and
// the new events are summed here.
func (b *Bulk) AddSummed(ctx context.Context, events []*event.Event, x *Sums) error {
	if b.err != nil {
		return b.err
	}
	b.sums = x
	err := b.add(ctx, events)
	b.sums = nil
	if err != nil {
		b.fail()
		b.err = err
	}
	return err
}

// merge adds a batch's sums to the transaction's.
func (b *Bulk) merge(x *Sums) {
	for k, a := range x.ips {
		mergeAggregate(b.ips, k, a)
	}
	for k, a := range x.nums {
		mergeAggregate(b.nums, k, a)
	}
	for k, t := range x.peers {
		b.peers[k] = b.peers[k] || t
	}
	for k, n := range x.counts {
		b.counts[k] += n
	}
	if b.an.minutes == nil {
		b.an.minutes, b.an.runs = map[string]int64{}, map[campaignKey]*run{}
	}
	for m, n := range x.an.minutes {
		b.an.minutes[m] += n
	}
	b.pending += int64(x.events)
}

// mergeAggregate adds a's sightings to m's aggregate of key, as Aggregate.Add adds one.
func mergeAggregate(m aggregates, key string, a *store.Aggregate) {
	t, ok := m[key]
	if !ok {
		m[key] = a
		return
	}
	if t.FirstSeen == "" || a.FirstSeen < t.FirstSeen {
		t.FirstSeen = a.FirstSeen
	}
	t.LastSeen = max(t.LastSeen, a.LastSeen)
	t.Count += a.Count
	t.Local += a.Local
	t.Verified += a.Verified
	t.VerifiedLocal += a.VerifiedLocal
	t.VerifiedTrusted += a.VerifiedTrusted
}

// Add stores events; a transaction that reaches its bounds is committed. The events are not
// kept: the caller may reuse the slice.
func (b *Bulk) Add(ctx context.Context, events []*event.Event) error {
	return b.AddSummed(ctx, events, nil)
}

// add stores one batch of events in the open transaction, or a new one. A batch is never
// cut: its campaigns are found as WriteCount finds a batch's (a campaign takes the user agent
// and country of its source's first event in the batch), so an import cut into the same
// batches stores the same campaigns.
func (b *Bulk) add(ctx context.Context, events []*event.Event) error {
	if b.tx == nil {
		if err := b.begin(ctx); err != nil {
			return err
		}
	}
	fresh, err := b.insert(ctx, events)
	if err != nil {
		return err
	}
	var runs map[campaignKey]*run // the batch's campaigns
	if x := b.sums; x != nil && len(fresh) == x.events {
		b.merge(x) // every event was new: the batch's sums are the store's
		runs = x.an.runs
	} else {
		for _, e := range fresh {
			b.pending++
			sumEvent(e, b.s.labeler, b.ips, b.nums, b.peers, b.counts, &b.an)
		}
		runs = b.an.runs
	}
	if len(runs) > 0 {
		if err := b.s.writeCampaigns(ctx, b.tx, runs); err != nil {
			return fmt.Errorf("update analytics in %s: %w", b.s.path, err)
		}
	}
	clear(b.an.runs)
	b.an.lastRun = nil
	if b.events >= b.o.MaxEvents || b.bytes >= b.o.MaxBytes || time.Since(b.began) >= b.o.MaxHold {
		return b.commit(ctx)
	}
	return nil
}

// Added returns how many events were committed as new so far.
func (b *Bulk) Added() int64 { return b.added }

// Close commits the open transaction and restores the writer's page cache. It returns the
// bulk's first error, if any.
func (b *Bulk) Close(ctx context.Context) error {
	if b.err == nil && b.tx != nil {
		if err := b.commit(ctx); err != nil {
			b.fail()
			b.err = err
		}
	}
	b.restore()
	return b.err
}

// Abort rolls back the open transaction: what was committed before stays.
func (b *Bulk) Abort() {
	b.fail()
	if b.err == nil {
		b.err = errors.New("bulk write aborted")
	}
	b.restore()
}

func (b *Bulk) restore() {
	// The default of a connection (2 MiB), for what the store writes after the bulk.
	b.s.w.ExecContext(context.Background(), "PRAGMA cache_size = -2000")
	b.s.w.ExecContext(context.Background(), "PRAGMA wal_autocheckpoint = 1000")
}

// fail rolls back the open transaction.
func (b *Bulk) fail() {
	if b.tx == nil {
		return
	}
	b.tx.Rollback()
	b.tx = nil
	b.s.campaigns = nil // it may remember campaigns the rollback removed
	b.s.keys.mu.Unlock()
}

func (b *Bulk) begin(ctx context.Context) error {
	s := b.s
	// As in WriteCount: the filter lock is held from before the first read to after the
	// commit, so that the check for other writers sees a transaction wholly or not at all.
	s.keys.mu.Lock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		s.keys.mu.Unlock()
		return fmt.Errorf("begin write to %s: %w", s.path, err)
	}
	b.tx = tx
	b.ips, b.nums, b.counts = aggregates{}, aggregates{}, dimensionCounts{}
	b.an, b.peers = analytics{}, keyPeers{}
	b.events, b.bytes, b.pending, b.began = 0, 0, 0, time.Now()
	return nil
}

// insert stores events in the open transaction and returns those that were new, in order.
func (b *Bulk) insert(ctx context.Context, events []*event.Event) (fresh []*event.Event, err error) {
	s, tx := b.s, b.tx
	fresh = b.fresh[:0]
	for rest := events; len(rest) > 0; {
		size := chunkSize(len(rest))
		chunk := rest[:size]
		rest = rest[size:]
		b.args = b.args[:0]
		for _, e := range chunk {
			b.args = appendEventArgs(b.args, e)
			b.bytes += int64(len(e.SIPMessage))
		}
		b.events += len(chunk)
		res, err := tx.StmtContext(ctx, s.inserts.stmts[size]).ExecContext(ctx, b.args...)
		if err != nil {
			return nil, fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		all, err := s.newOnes(ctx, tx, res, len(chunk), b.inserted)
		if err != nil {
			return nil, fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		if all {
			fresh = append(fresh, chunk...)
			continue
		}
		clear(b.counted)
		for _, e := range chunk {
			if _, ok := b.inserted[e.UUID]; !ok {
				continue // already stored: counted before
			}
			if _, dup := b.counted[e.UUID]; dup {
				continue // twice in this chunk (an import of two identical records)
			}
			b.counted[e.UUID] = struct{}{}
			fresh = append(fresh, e)
		}
	}
	b.fresh = fresh[:0]
	return fresh, nil
}

// commit writes the open transaction's sums as WriteCount writes a batch's, and commits.
func (b *Bulk) commit(ctx context.Context) error {
	s, tx := b.s, b.tx
	b.an.flush(b.counts)
	var seq int64
	if len(b.ips) > 0 {
		if err := tx.StmtContext(ctx, s.nextSeq).QueryRowContext(ctx).Scan(&seq); err != nil {
			return fmt.Errorf("advance the change sequence of %s: %w", s.path, err)
		}
	}
	if err := writeSorted(ctx, tx, s.upsertIP, b.ips, seq); err != nil {
		return fmt.Errorf("update IP aggregates in %s: %w", s.path, err)
	}
	if err := writeSorted(ctx, tx, s.upsertNum, b.nums, seq); err != nil {
		return fmt.Errorf("update number aggregates in %s: %w", s.path, err)
	}
	var newNumbers []string
	if len(b.nums) > 0 {
		added, err := s.addNumberKeys(ctx, tx)
		if err != nil {
			return fmt.Errorf("update number match keys in %s: %w", s.path, err)
		}
		s.keys.num.addMatchKeys(added)
		newNumbers = added
	}
	if err := b.peers.write(ctx, tx.StmtContext(ctx, s.insertPeer)); err != nil {
		return fmt.Errorf("update peer sightings in %s: %w", s.path, err)
	}
	if err := writeCountsSorted(ctx, tx, s.upsertCount, b.counts); err != nil {
		return fmt.Errorf("update statistics in %s: %w", s.path, err)
	}
	if err := s.writeAnalytics(ctx, tx, &b.an, newNumbers); err != nil {
		return fmt.Errorf("update analytics in %s: %w", s.path, err)
	}
	s.keys.ip.addAll(b.ips)
	s.keys.num.addAll(b.nums)
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit %d events to %s: %w", b.events, s.path, err)
	}
	b.tx = nil
	s.keys.mu.Unlock()
	b.added += b.pending
	b.ips, b.nums, b.counts, b.an, b.peers = nil, nil, nil, analytics{}, nil
	time.Sleep(yieldAfterCommit)
	return nil
}

// writeSorted upserts aggregates in key order: a transaction's tens of thousands of keys then
// walk the table's pages once, in order, instead of jumping between them.
func writeSorted(ctx context.Context, tx *sql.Tx, st multiRow, m aggregates, seq int64) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	args := make([]any, 0, 9*len(m))
	for _, k := range keys {
		a := m[k]
		args = append(args, a.Key, a.FirstSeen, a.LastSeen, a.Count, a.Local,
			a.Verified, a.VerifiedLocal, a.VerifiedTrusted, seq)
	}
	return st.exec(ctx, tx, args)
}

// writeCountsSorted upserts the per-hour counts in their primary key's order.
func writeCountsSorted(ctx context.Context, tx *sql.Tx, st multiRow, m dimensionCounts) error {
	keys := make([]countKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b countKey) int {
		return cmp.Or(cmp.Compare(a.dim, b.dim), strings.Compare(a.hour, b.hour), strings.Compare(a.value, b.value))
	})
	args := make([]any, 0, 4*len(m))
	for _, k := range keys {
		args = append(args, int(k.dim), k.hour, k.value, m[k])
	}
	return st.exec(ctx, tx, args)
}
