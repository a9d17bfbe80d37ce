package sqlite

import (
	"context"
	"database/sql"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// filter is a Bloom filter of the keys (IPs or numbers) in one aggregate table. A lookup
// whose key the filter has never seen is answered "unknown" without SQLite: most numbers a
// PBX asks about are ordinary ones, and SQLite's per-query locking does not scale with cores
// (bench/lookup). A false positive only costs the SQLite lookup it would have made anyway.
//
// Bits are set and read atomically: the single store writer adds keys while lookups read.
type filter struct {
	seed     maphash.Seed
	bits     []atomic.Uint64
	mask     uint64 // number of bits - 1 (a power of two)
	capacity int64  // keys it was sized for
	added    atomic.Int64
}

// bitsPerKey and hashes give about a 1% false-positive rate at capacity.
const (
	bitsPerKey = 10
	hashes     = 7
)

// newFilter sizes a filter for n keys with room to double.
func newFilter(n int64) *filter {
	capacity := max(2*n, 1<<16)
	nbits := uint64(1) << bits.Len64(uint64(capacity*bitsPerKey)-1)
	return &filter{
		seed:     maphash.MakeSeed(),
		bits:     make([]atomic.Uint64, nbits/64),
		mask:     nbits - 1,
		capacity: capacity,
	}
}

func (f *filter) positions(key string) (h1, h2 uint64) {
	h := maphash.String(f.seed, key)
	return h, h>>32 | h<<32 | 1 // odd, so the probes cover the table
}

func (f *filter) add(key string) {
	h1, h2 := f.positions(key)
	for i := range uint64(hashes) {
		b := (h1 + i*h2) & f.mask
		f.bits[b/64].Or(1 << (b % 64))
	}
	f.added.Add(1)
}

// mayContain is false only for keys never added.
func (f *filter) mayContain(key string) bool {
	h1, h2 := f.positions(key)
	for i := range uint64(hashes) {
		b := (h1 + i*h2) & f.mask
		if f.bits[b/64].Load()&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether the filter holds more keys than it was sized for, so that its
// false-positive rate has grown and it should be rebuilt larger.
func (f *filter) full() bool { return f.added.Load() > f.capacity }

// keyFilter keeps the filter of one aggregate table current.
type keyFilter struct {
	list struct{ table, key string }
	cur  atomic.Pointer[filter] // nil: not built, or being rebuilt; lookups ask SQLite
	// matchKeys adds each key's national-match keys (event.NumberKeys) too, so that a
	// national lookup that matches nothing is answered without SQLite. They contain ':',
	// which no stored number does, so they never stand for a number.
	matchKeys bool
	// perRow is how many filter entries a row made at the last build (1 without match
	// keys): the next filter is sized by it.
	perRow float64

	// Guarded by keyFilters.mu.
	pending *filter // being built: the writer adds to it too
}

// mayContain is false only when the key is certainly not stored.
func (k *keyFilter) mayContain(key string) bool {
	f := k.cur.Load()
	return f == nil || f.mayContain(key)
}

// addAll adds a batch's keys to the live and the pending filter. Called with mu held.
func (k *keyFilter) addAll(m aggregates) {
	f := k.cur.Load()
	for key := range m {
		if f != nil {
			f.add(key)
		}
		if k.pending != nil {
			k.pending.add(key)
		}
	}
}

// addMatchKeys adds the match keys of numbers the batch stored for the first time (those
// stored before are in the filter already). Called with mu held.
func (k *keyFilter) addMatchKeys(added []string) {
	if !k.matchKeys {
		return
	}
	f := k.cur.Load()
	for _, n := range added {
		for _, mk := range event.NumberKeys(n) {
			if f != nil {
				f.add(mk)
			}
			if k.pending != nil {
				k.pending.add(mk)
			}
		}
	}
}

// addTo adds a stored key, and its match keys where k keeps them, to f, and says how many
// entries that made.
func (k *keyFilter) addTo(f *filter, key string) int64 {
	f.add(key)
	n := int64(1)
	if k.matchKeys {
		for _, mk := range event.NumberKeys(key) {
			f.add(mk)
			n++
		}
	}
	return n
}

// keyFilters are the store's filters and the lock that orders them against writes.
type keyFilters struct {
	mu      sync.Mutex
	ip, num keyFilter
	// dataVersion is the writer connection's PRAGMA data_version at the last check: it
	// changes only when another connection (another process) commits. Guarded by mu.
	dataVersion int64
}

// filterCheckInterval is how often the store looks for rows it did not write itself (dialtrap
// import beside a running node): until the next check finds them, a lookup of one of those
// keys could be answered "unknown".
const filterCheckInterval = time.Second

// PrepareLookups makes IP and Number answer most misses from in-memory filters; the API calls
// it once when it starts (it implements api.Lookups). Processes that only write (capture-only nodes, dialtrap
// import) or look up once (dialtrap check) never pay for reading every key. Only a store
// opened for writing keeps its filters exact for its own writes, so a read-only one ignores
// the call.
func (s *Store) PrepareLookups() {
	if s.w != nil {
		s.filtersOnce.Do(s.startFilters)
	}
}

// startFilters builds the filters in the background (lookups ask SQLite until they are
// ready) and then checks every filterCheckInterval that the tables hold only what this
// process wrote, rebuilding a filter that another writer or growth has made stale.
func (s *Store) startFilters() {
	// Under the lock writes take: the writer may be storing a batch already (a node whose
	// API starts after capture), and it reads matchKeys.
	s.keys.mu.Lock()
	s.keys.ip.list, s.keys.num.list = lists[store.IPAddresses], lists[store.CalledNumbers]
	s.keys.num.matchKeys = true
	s.keys.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	s.stopCheck, s.checkDone = cancel, make(chan struct{})
	go func() {
		defer close(s.checkDone)
		warm := s.labeler != nil // group the targets once the filters are built
		t := time.NewTicker(filterCheckInterval)
		defer t.Stop()
		for {
			foreign, err := s.foreignWrites(ctx)
			for _, k := range []*keyFilter{&s.keys.ip, &s.keys.num} {
				f := k.cur.Load()
				if err == nil && (foreign || f == nil || f.full()) {
					k.cur.Store(nil) // ask SQLite until rebuilt
					err = s.rebuildFilter(ctx, k)
				}
				if err != nil && ctx.Err() == nil {
					k.cur.Store(nil) // cannot vouch for it: lookups ask SQLite
				}
			}
			if warm {
				s.groupAll(ctx, 0) // the first /stats/targets need not wait for it
				warm = false
			} else {
				s.refreshTargets(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// foreignWrites reports whether another connection (another process: dialtrap import beside
// the node) committed since the last call. This process's own writes are in the filters
// already, and the writer connection's data_version does not change for them, so a quiet
// store costs one cheap prepared statement a check and nothing a write.
func (s *Store) foreignWrites(ctx context.Context) (bool, error) {
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	var v int64
	if err := s.dataVersion.QueryRowContext(ctx).Scan(&v); err != nil {
		return false, err
	}
	changed := v != s.keys.dataVersion
	s.keys.dataVersion = v
	return changed, nil
}

// rebuildFilter reads every key of k's table into a new filter.
func (s *Store) rebuildFilter(ctx context.Context, k *keyFilter) error {
	tx, err := s.bulk.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The snapshot is taken under the lock, so no write of ours falls between it and the
	// pending filter that catches the writes made during the scan.
	s.keys.mu.Lock()
	var rows int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM totals WHERE name = ?`, k.list.table).Scan(&rows); err != nil {
		s.keys.mu.Unlock()
		return err
	}
	if k.perRow < 1 {
		k.perRow = 1
		if k.matchKeys {
			k.perRow = 5 // a typical dialled number has four match keys; measured below
		}
	}
	f := newFilter(int64(float64(rows) * k.perRow))
	k.pending = f
	s.keys.mu.Unlock()
	defer func() {
		s.keys.mu.Lock()
		k.pending = nil
		s.keys.mu.Unlock()
	}()

	keys, err := tx.QueryContext(ctx, `SELECT `+k.list.key+` FROM `+k.list.table)
	if err != nil {
		return err
	}
	defer keys.Close()
	var scanned, entries int64
	for keys.Next() {
		var key string
		if err := keys.Scan(&key); err != nil {
			return err
		}
		scanned++
		entries += k.addTo(f, key)
	}
	if err := keys.Err(); err != nil {
		return err
	}
	s.keys.mu.Lock()
	if scanned > 0 {
		k.perRow = max(1, float64(entries)/float64(scanned))
	}
	k.cur.Store(f)
	s.keys.mu.Unlock()
	return nil
}
