// Package sqlite is the embedded default store: one SQLite file in WAL mode, written by a
// single goroutine in batched transactions, read through a separate read-only pool.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// migrations are applied in order; PRAGMA user_version records how many have run. Append
// only: never edit one that has shipped.
var migrations = []migration{
	{sql: `CREATE TABLE events (
		id                 INTEGER PRIMARY KEY,
		event_uuid         TEXT NOT NULL UNIQUE,
		event_timestamp    TEXT NOT NULL,
		app_name           TEXT NOT NULL,
		app_version        TEXT NOT NULL,
		created_by_node_id TEXT NOT NULL,
		collected_method   TEXT NOT NULL,
		transport_type     TEXT NOT NULL,
		source_ip          TEXT NOT NULL,
		source_port        INTEGER NOT NULL,
		destination_ip     TEXT NOT NULL,
		destination_port   INTEGER NOT NULL,
		called_number      TEXT NOT NULL,
		sip_method         TEXT NOT NULL,
		sip_user_agent     TEXT NOT NULL,
		sip_message        TEXT NOT NULL,
		from_peer          INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE ip_addresses (
		ip_address TEXT PRIMARY KEY,
		first_seen TEXT NOT NULL,
		last_seen  TEXT NOT NULL,
		seen_count INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX ip_addresses_last_seen ON ip_addresses(last_seen);
	CREATE TABLE called_numbers (
		called_number TEXT PRIMARY KEY,
		first_seen    TEXT NOT NULL,
		last_seen     TEXT NOT NULL,
		seen_count    INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX called_numbers_last_seen ON called_numbers(last_seen);`},

	// 2: national-match keys of each number, per-hour counts for statistics, and list totals
	// kept on write so that the API never counts a whole table.
	{sql: `CREATE TABLE number_keys (
		match_key     TEXT NOT NULL,
		called_number TEXT NOT NULL,
		PRIMARY KEY (match_key, called_number)
	) WITHOUT ROWID;
	CREATE TABLE event_counts (
		dimension  INTEGER NOT NULL,
		hour       TEXT NOT NULL,
		value      TEXT NOT NULL,
		seen_count INTEGER NOT NULL,
		PRIMARY KEY (dimension, hour, value)
	) WITHOUT ROWID;
	CREATE TABLE totals (
		name  TEXT PRIMARY KEY,
		value INTEGER NOT NULL
	) WITHOUT ROWID;
	-- Triggers keep the totals, and note new numbers for their match keys, at C speed: an
	-- upsert that only updates fires no INSERT trigger.
	CREATE TABLE new_numbers (called_number TEXT NOT NULL);
	CREATE TRIGGER ip_addresses_added AFTER INSERT ON ip_addresses BEGIN
		UPDATE totals SET value = value + 1 WHERE name = 'ip_addresses';
	END;
	CREATE TRIGGER called_numbers_added AFTER INSERT ON called_numbers BEGIN
		UPDATE totals SET value = value + 1 WHERE name = 'called_numbers';
		INSERT INTO new_numbers VALUES (new.called_number);
	END;
	INSERT INTO totals SELECT 'ip_addresses', count(*) FROM ip_addresses;
	INSERT INTO totals SELECT 'called_numbers', count(*) FROM called_numbers;
	INSERT INTO event_counts SELECT 0, substr(event_timestamp, 1, 13), sip_method, count(*)
		FROM events GROUP BY 2, 3;
	INSERT INTO event_counts SELECT 1, substr(event_timestamp, 1, 13), substr(sip_user_agent, 1, 256), count(*)
		FROM events GROUP BY 2, 3;
	INSERT INTO event_counts SELECT 2, substr(event_timestamp, 1, 13), transport_type, count(*)
		FROM events GROUP BY 2, 3;`,
		after: backfillNumberKeys},

	// 3: where each key was seen (locally, by how many peers, trusted ones among them), and
	// what catch-up serves to peers: the signer and envelope of peer events, in time order.
	{sql: `ALTER TABLE events ADD COLUMN peer_id TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN envelope BLOB;
	CREATE INDEX events_time ON events(event_timestamp);
	ALTER TABLE ip_addresses ADD COLUMN local_count INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN peers INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN trusted_peers INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN local_count INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN peers INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN trusted_peers INTEGER NOT NULL DEFAULT 0;
	-- One row per (list, key, reporting peer); the triggers keep the per-key counts.
	CREATE TABLE key_peers (
		list    INTEGER NOT NULL,
		key     TEXT NOT NULL,
		peer_id TEXT NOT NULL,
		trusted INTEGER NOT NULL,
		PRIMARY KEY (list, key, peer_id)
	) WITHOUT ROWID;
	CREATE TRIGGER key_peers_added AFTER INSERT ON key_peers BEGIN
		UPDATE ip_addresses SET peers = peers + 1, trusted_peers = trusted_peers + new.trusted
			WHERE new.list = 0 AND ip_address = new.key;
		UPDATE called_numbers SET peers = peers + 1, trusted_peers = trusted_peers + new.trusted
			WHERE new.list = 1 AND called_number = new.key;
	END;
	CREATE TRIGGER key_peers_trusted AFTER UPDATE OF trusted ON key_peers WHEN new.trusted > old.trusted BEGIN
		UPDATE ip_addresses SET trusted_peers = trusted_peers + 1 WHERE new.list = 0 AND ip_address = new.key;
		UPDATE called_numbers SET trusted_peers = trusted_peers + 1 WHERE new.list = 1 AND called_number = new.key;
	END;
	UPDATE ip_addresses SET local_count = c.n
		FROM (SELECT source_ip AS k, count(*) AS n FROM events WHERE from_peer = 0 GROUP BY 1) AS c
		WHERE c.k = ip_address;
	UPDATE called_numbers SET local_count = c.n
		FROM (SELECT called_number AS k, count(*) AS n FROM events WHERE from_peer = 0 GROUP BY 1) AS c
		WHERE c.k = called_number;`},

	// 4: the national match learned 000 as an international prefix: the match keys of every
	// stored number are computed anew.
	{sql: `DELETE FROM number_keys;`, after: backfillNumberKeys},

	// 5: messages are kept up to 16 KiB; the length of a longer one received is recorded.
	{sql: `ALTER TABLE events ADD COLUMN sip_message_length INTEGER NOT NULL DEFAULT 0;`},

	// 6: whether each event's source address was proven (source_verified), verified sightings
	// per key (all, local, from peers trusted when they reported), and a change sequence per
	// key (the write batch that last touched it) that blocklist streams resume from; the
	// store's epoch tells a cursor from another database.
	{sql: `ALTER TABLE events ADD COLUMN source_verified INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN verified_count INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN verified_local INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN verified_trusted INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ip_addresses ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX ip_addresses_seq ON ip_addresses(seq);
	ALTER TABLE called_numbers ADD COLUMN verified_count INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN verified_local INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN verified_trusted INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE called_numbers ADD COLUMN seq INTEGER NOT NULL DEFAULT 0; -- no index: no number stream reads it yet
	INSERT INTO totals VALUES ('change_seq', 0);
	INSERT INTO totals VALUES ('epoch', abs(random()) % 9007199254740991 + 1);`},

	// 7: what analytics read: each event's tool, spoofed User-Agent and payloads (JSON); events
	// per minute (the timeline); targets, the numbers behind the dial-out prefixes; campaigns,
	// runs of one source's events by one tool. Counts by country, prefix and target are not
	// computed for events stored before (the data to derive them came with this version).
	{sql: `ALTER TABLE events ADD COLUMN tool TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN ua_spoofed INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE events ADD COLUMN payload TEXT NOT NULL DEFAULT '';
	CREATE TABLE minute_counts (
		minute     INTEGER PRIMARY KEY, -- Unix time / 60
		seen_count INTEGER NOT NULL
	);
	INSERT INTO minute_counts SELECT unixepoch(substr(event_timestamp, 1, 16) || ':00') / 60 AS m, count(*)
		FROM events WHERE m IS NOT NULL GROUP BY m;
	CREATE TABLE targets (
		target        TEXT PRIMARY KEY,
		country       TEXT NOT NULL,
		type          TEXT NOT NULL,
		first_seen    TEXT NOT NULL,
		last_seen     TEXT NOT NULL,
		seen_count    INTEGER NOT NULL,
		dialled_count INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX targets_count ON targets(seen_count);
	CREATE INDEX targets_first_seen ON targets(first_seen);
	CREATE TABLE campaigns (
		id             INTEGER PRIMARY KEY,
		source_ip      TEXT NOT NULL,
		tool           TEXT NOT NULL,
		country        TEXT NOT NULL,
		sip_user_agent TEXT NOT NULL,
		first_seen     TEXT NOT NULL,
		last_seen      TEXT NOT NULL,
		seen_count     INTEGER NOT NULL
	);
	CREATE INDEX called_numbers_count ON called_numbers(seen_count);
	CREATE INDEX campaigns_source ON campaigns(source_ip, tool, last_seen);
	CREATE INDEX campaigns_last_seen ON campaigns(last_seen);`},

	// 8: targets by last seen, for windows (/stats/targets?since=, dialtrap top).
	{sql: `CREATE INDEX targets_last_seen ON targets(last_seen);`},

	// 9: a number's target, its country and type are kept with the number, written once when
	// the number is first stored; targets are the numbers grouped by target when asked. A
	// targets table and a count index on numbers, updated by every batch, had cut the zero-loss
	// capture rate from 75,000 to 50,000 probes/s (bench/capture, 2 cores). Numbers stored
	// before have no target.
	{sql: `DROP TABLE targets;
	DROP INDEX called_numbers_count;
	ALTER TABLE called_numbers ADD COLUMN target TEXT NOT NULL DEFAULT '';
	ALTER TABLE called_numbers ADD COLUMN target_country TEXT NOT NULL DEFAULT '';
	ALTER TABLE called_numbers ADD COLUMN target_type TEXT NOT NULL DEFAULT '';
	CREATE INDEX called_numbers_target ON called_numbers(target) WHERE target != '';`},

	// 10: how many probes each event stands for (event.RepeatCount; 0 for one), once identical
	// probes are folded into one event. Every count adds the event's weight.
	{sql: `ALTER TABLE events ADD COLUMN repeat_count INTEGER NOT NULL DEFAULT 0;`},
}

// A migration is SQL and, where SQL cannot compute it, Go code run in the same transaction.
type migration struct {
	sql   string
	after func(ctx context.Context, tx *sql.Tx) error
}

func backfillNumberKeys(ctx context.Context, tx *sql.Tx) error {
	nums, err := scanStrings(tx.QueryContext(ctx, `SELECT called_number FROM called_numbers`))
	if err != nil {
		return err
	}
	for args := keyArgs(nums); len(args) > 0; {
		n := chunkSize(len(args) / 2)
		if _, err := tx.ExecContext(ctx, insertKeysSQL(values(n, 2)), args[:2*n]...); err != nil {
			return err
		}
		args = args[2*n:]
	}
	return nil
}

// scanStrings returns the single text column of a query's rows.
func scanStrings(rows *sql.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// keyArgs are the rows of the match keys of nums (match_key, called_number).
func keyArgs(nums []string) []any {
	var args []any
	for _, n := range nums {
		for _, k := range event.NumberKeys(n) {
			args = append(args, k, n)
		}
	}
	return args
}

func insertKeysSQL(values string) string {
	return `INSERT INTO number_keys (match_key, called_number) VALUES ` + values + ` ON CONFLICT DO NOTHING`
}

// Store is the SQLite backend.
type Store struct {
	path string
	w    *sql.DB // one connection: the single writer
	r    *sql.DB // read-only pool for lookups, a connection per CPU
	bulk *sql.DB // read-only pool for lists, statistics and exports
	// snap serves long lists from temporary snapshots; a stream holds one of its connections
	// for as long as the client reads, so it is a pool of its own: slow readers never take
	// the connections statistics, exports, catch-up and the filter check need.
	snap *sql.DB

	inserts     multiRow // events
	upsertIP    multiRow
	upsertNum   multiRow
	insertKeys  multiRow
	insertPeer  *sql.Stmt
	upsertCount multiRow
	nextSeq     *sql.Stmt // advances the change sequence
	newNumbers  *sql.Stmt // the numbers the called_numbers_added trigger noted
	clearNew    *sql.Stmt
	addedUUIDs  *sql.Stmt // the UUIDs of a range of rowids (newOnes)
	dataVersion *sql.Stmt // on the writer: changes when another connection commits
	analytics   analyticsStmts

	// labeler gives events' countries and number targets (SetLabeler); nil leaves them out.
	labeler store.Labeler
	// campaigns remembers the open campaign of recent (source, tool) pairs (writer only).
	campaigns map[campaignKey]openCampaign
	// targets holds the numbers grouped by target for /stats/targets (analytics.go).
	targets targetsCache

	// Lookups are prepared on the read pool: parsing the SQL cost as much as running it.
	lookupIP  *sql.Stmt
	lookupNum *sql.Stmt
	// matchNums are the national-match queries by number of match keys, prepared on first
	// use (a PBX's policy agent asks one per call).
	matchMu   sync.Mutex
	matchNums map[int]*sql.Stmt

	version   int  // schema version: the current one, but for a database opened read-only
	snapshots bool // the bulk pool can make temporary tables (a store opened for writing)
	// snapshotErr is the first failure to make a list snapshot (kept for SnapshotError).
	snapshotErr atomic.Pointer[error]
	keys        keyFilters
	filtersOnce sync.Once // guards PrepareLookups
	stopCheck   context.CancelFunc
	checkDone   chan struct{}
}

const eventColumns = `event_uuid, event_timestamp, app_name, app_version, created_by_node_id,
	collected_method, transport_type, source_ip, source_port, destination_ip, destination_port,
	called_number, sip_method, sip_user_agent, sip_message, from_peer, peer_id, envelope, sip_message_length,
	source_verified, tool, ua_spoofed, payload, repeat_count`

// readColumns are eventColumns as a database of this store's schema version has them: one
// opened read-only may be a version behind (see minReadVersion).
func (s *Store) readColumns() string {
	cols := eventColumns
	if s.version < 10 {
		cols = strings.Replace(cols, "repeat_count", "0", 1)
	}
	if s.version < 7 {
		cols = strings.Replace(cols, "tool, ua_spoofed, payload", "'', 0, ''", 1)
	}
	if s.version < 6 {
		cols = strings.Replace(cols, "source_verified", "0", 1)
	}
	if s.version < 5 {
		cols = strings.Replace(cols, "sip_message_length", "0", 1)
	}
	return cols
}

// appendEventArgs appends e's values in the order of eventColumns.
func appendEventArgs(args []any, e *event.Event) []any {
	return append(args, e.UUID, e.Timestamp, e.AppName, e.AppVersion, e.NodeID,
		e.CollectedMethod, e.Transport, e.SourceIP, e.SourcePort, e.DestinationIP,
		e.DestinationPort, e.CalledNumber, e.SIPMethod, e.SIPUserAgent, e.SIPMessage, e.FromPeer,
		e.Peer, e.Sealed, e.SIPMessageLength, e.SourceVerified, e.Tool, e.UASpoofed, store.PayloadJSON(e.Payload), e.RepeatCount)
}

// insertSQL inserts events, skipping UUIDs already stored.
func insertSQL(values string) string {
	return "INSERT INTO events (" + eventColumns + ") VALUES " + values + " ON CONFLICT(event_uuid) DO NOTHING"
}

// eventCols is the number of eventColumns.
const eventCols = 24

// Open opens or creates the database at path and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := create(path); err != nil {
		return nil, err
	}
	w, err := sql.Open("sqlite", dsn(path, writer))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{path: path, w: w, version: len(migrations)}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	if s.r, s.bulk, err = openReaders(path); err != nil {
		w.Close()
		return nil, err
	}
	if s.snap, err = openPool(path, snapshotReader, snapshotStreams); err != nil {
		s.Close()
		return nil, err
	}
	s.snapshots = true
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.prepareReads(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) prepareReads(ctx context.Context) error {
	var err error
	if s.lookupIP, err = s.r.PrepareContext(ctx, s.lookupSQL("ip_addresses", "ip_address")); err != nil {
		return fmt.Errorf("prepare lookups on %s: %w", s.path, err)
	}
	if s.lookupNum, err = s.r.PrepareContext(ctx, s.lookupSQL("called_numbers", "called_number")); err != nil {
		return fmt.Errorf("prepare lookups on %s: %w", s.path, err)
	}
	return nil
}

// OpenReadOnly opens an existing database for reading only (dialtrap check, export): it never
// creates the file or changes its schema, so it is safe beside a running node and for a user
// who may only read the file.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open database %s: %w (give the node's database with -f or --data-dir)", path, err)
	}
	r, bulk, err := openReaders(path)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, r: r, bulk: bulk}
	fail := func(err error) (*Store, error) {
		r.Close()
		bulk.Close()
		return nil, err
	}
	var version int
	if err := r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fail(fmt.Errorf("read schema version of %s (is it an SQLite database?): %w", path, err))
	}
	s.version = version
	if version < minReadVersion || version > len(migrations) {
		return fail(fmt.Errorf("database %s has schema version %d, this dialtrap reads versions %d to %d: start the node of this version on it once to upgrade it",
			path, version, minReadVersion, len(migrations)))
	}
	if err := s.prepareReads(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// minReadVersion is the oldest schema OpenReadOnly reads: from version 3 on the tables and
// columns are those of today but for sip_message_length (version 5; read as 0 before) and the
// national-match keys (version 4), so check and export keep working on a node's database
// between an upgrade of the binary and the node's restart, which migrates it.
const minReadVersion = 3

// SchemaVersion returns the schema version of the database at path (0 for a new or empty
// file) and the version this dialtrap brings it to, without changing it.
func SchemaVersion(ctx context.Context, path string) (have, want int, err error) {
	if _, err := os.Stat(path); err != nil {
		return 0, len(migrations), nil
	}
	db, err := sql.Open("sqlite", dsn(path, reader))
	if err != nil {
		return 0, 0, fmt.Errorf("open database %s: %w", path, err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
		return 0, 0, fmt.Errorf("read schema version of %s (is it an SQLite database?): %w", path, err)
	}
	return have, len(migrations), nil
}

// openReaders opens the two read-only pools. Lookups have their own, so that a client slowly
// reading a long list never holds the connection a PBX's lookup waits for. Connections are
// kept open: opening one runs the pragmas and reads the schema, which costs more than a
// lookup. One lookup connection per CPU measured fastest (bench/lookup: 2 beat 4 and 16,
// which queued on SQLite's shared-memory locks).
func openReaders(path string) (lookups, bulk *sql.DB, err error) {
	if lookups, err = openPool(path, reader, max(2, runtime.GOMAXPROCS(0))); err != nil {
		return nil, nil, err
	}
	if bulk, err = openPool(path, bulkReader, 4); err != nil {
		lookups.Close()
		return nil, nil, err
	}
	return lookups, bulk, nil
}

// snapshotStreams is how many long lists are read at once; one more waits for a free
// connection (at most snapshotWait) and is then told to come back (store.ErrBusy).
const snapshotStreams = 8

var snapshotWait = 5 * time.Second // a variable for tests

// openPool opens a pool of n connections of kind, kept open: opening one runs the pragmas
// and reads the schema, which costs more than a lookup.
func openPool(path string, kind connKind, n int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, kind))
	if err != nil {
		return nil, fmt.Errorf("open database %s for reading: %w", path, err)
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	return db, nil
}

// create makes the database file, if it is new, readable by its owner and group only: it
// holds whatever attackers sent, and SQLite creates the WAL and shared-memory files with the
// database file's mode. A directory or file it cannot write is said so plainly (SQLite would
// only say it cannot read the schema).
func create(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create directory for database %s: %w (is the data directory writable?)", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err == nil {
		return f.Close()
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		if _, serr := os.Stat(path); serr == nil {
			return fmt.Errorf("database file %s is not writable: %w (fix its permissions, or give another with -f)", path, err)
		}
		return fmt.Errorf("data directory %s is not writable: %w (fix its permissions, or give another with --data-dir or -f)", dir, err)
	}
	return fmt.Errorf("open database %s: %w", path, err)
}

// dsn sets the pragmas on every connection: WAL so readers never block the writer, a busy
// timeout so bursts wait instead of failing, synchronous=NORMAL (safe in WAL against a killed
// process; only an OS crash can lose the last transactions).
func dsn(path string, kind connKind) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	if kind == writer {
		// Pages that retention frees go back to the file system a chunk at a time
		// (PruneEvents). It takes only on a new database; an older one reuses freed pages.
		q.Add("_pragma", "auto_vacuum(2)")
	}
	if kind != snapshotReader { // a read-only connection cannot set it; the writer has
		q.Add("_pragma", "journal_mode(WAL)")
	}
	q.Add("_pragma", "synchronous(NORMAL)")
	switch kind {
	case writer:
		q.Set("_txlock", "immediate")
		// Statement journals (an upsert's undo within the batch's transaction) stay in
		// memory: in a temporary file they cost a write system call a page, a fifth of the
		// writer's time in a flood from many sources. They are a statement's pages, not more.
		q.Add("_pragma", "temp_store(2)")
		// After a checkpoint the WAL file is cut back to this size: a burst that grew it
		// does not keep the disk space.
		q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walSizeLimit))
	case reader:
		q.Add("_pragma", "query_only(1)")
		// Lookups read pages through a memory map rather than a pread each: on a store of a
		// million numbers most pages are not in a connection's own cache.
		q.Add("_pragma", "mmap_size(1073741824)")
	case bulkReader:
		// Scans read through the page cache, not a map: each connection's map of a large
		// store would count in the process's resident memory again.
		q.Add("_pragma", "query_only(1)")
	case snapshotReader:
		// Read-only on the database, but free to make temporary tables (list snapshots),
		// which live in files of the temp directory.
		q.Set("mode", "ro")
		q.Add("_pragma", "temp_store(1)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// connKind is what a connection is for.
type connKind int

const (
	writer         connKind = iota // the single writer
	reader                         // lookups
	bulkReader                     // lists, statistics, exports, catch-up
	snapshotReader                 // long lists of a node's store, through temporary snapshots
)

// walSizeLimit is what the WAL file is cut back to after a checkpoint.
const walSizeLimit = 64 << 20

func (s *Store) migrate(ctx context.Context) error {
	// Two connections creating one new file can meet where SQLite answers "busy" at once
	// instead of waiting (one switches the file to WAL while the other holds the write lock):
	// such a step is tried again, for as long as the busy timeout.
	deadline := time.Now().Add(10 * time.Second)
	for {
		done, err := s.migrateStep(ctx)
		if isBusy(err) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		if err != nil || done {
			return err
		}
	}
}

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// migrateStep applies the next migration, if any, in one write transaction that reads the
// schema version itself: another process migrating the same file at the same moment waits for
// the write lock and then sees the version it left.
func (s *Store) migrateStep(ctx context.Context) (done bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock first
	if err != nil {
		return false, fmt.Errorf("migrate %s: %w", s.path, err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("read schema version of %s (is it an SQLite database?): %w", s.path, err)
	}
	switch {
	case v > len(migrations):
		return false, fmt.Errorf("database %s has schema version %d, newer than this dialtrap knows (%d): upgrade dialtrap",
			s.path, v, len(migrations))
	case v == len(migrations):
		return true, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, migrations[v].sql); err != nil {
		return false, fmt.Errorf("migrate %s to schema version %d: %w", s.path, v+1, err)
	}
	if f := migrations[v].after; f != nil {
		if err := f(ctx, tx); err != nil {
			return false, fmt.Errorf("migrate %s to schema version %d: %w", s.path, v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, fmt.Errorf("migrate %s: %w", s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migrate %s to schema version %d: %w", s.path, v+1, err)
	}
	return false, nil
}

func (s *Store) prepare(ctx context.Context) error {
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.w.PrepareContext(ctx, q)
		return st
	}
	s.inserts = prepareRows(prep, eventCols, insertSQL)
	s.upsertIP = prepareRows(prep, 9, upsert("ip_addresses", "ip_address"))
	s.upsertNum = prepareRows(prep, 9, upsert("called_numbers", "called_number"))
	s.insertKeys = prepareRows(prep, 2, insertKeysSQL)
	s.nextSeq = prep(`UPDATE totals SET value = value + 1 WHERE name = 'change_seq' RETURNING value`)
	s.newNumbers = prep(`SELECT called_number FROM new_numbers`)
	s.clearNew = prep(`DELETE FROM new_numbers`)
	s.addedUUIDs = prep(`SELECT event_uuid FROM events WHERE id BETWEEN ? AND ?`)
	s.dataVersion = prep(`PRAGMA data_version`)
	s.insertPeer = prep(`INSERT INTO key_peers (list, key, peer_id, trusted) VALUES (?,?,?,?)
		ON CONFLICT DO UPDATE SET trusted = 1 WHERE excluded.trusted > trusted`)
	s.upsertCount = prepareRows(prep, 4, func(values string) string {
		return `INSERT INTO event_counts (dimension, hour, value, seen_count) VALUES ` + values + `
		ON CONFLICT DO UPDATE SET seen_count = seen_count + excluded.seen_count`
	})
	s.analytics = analyticsStmts{
		minute: prep(`INSERT INTO minute_counts (minute, seen_count) VALUES (?,?)
			ON CONFLICT DO UPDATE SET seen_count = seen_count + excluded.seen_count`),
		target: prep(`UPDATE called_numbers SET target = ?2, target_country = ?3, target_type = ?4 WHERE called_number = ?1`),
		findCampaign: prep(`SELECT id, first_seen, last_seen FROM campaigns WHERE source_ip = ? AND tool = ?
			ORDER BY last_seen DESC LIMIT 1`),
		nearCampaign: prep(`SELECT id, first_seen, last_seen FROM campaigns WHERE source_ip = ?1 AND tool = ?2
			AND last_seen >= ?3 AND first_seen <= ?4 ORDER BY last_seen DESC LIMIT 1`),
		newCampaign: prep(`INSERT INTO campaigns (source_ip, tool, country, sip_user_agent, first_seen, last_seen, seen_count)
			VALUES (?,?,?,?,?,?,?)`),
		growCampaign: prep(`UPDATE campaigns SET first_seen = min(first_seen, ?2), last_seen = max(last_seen, ?3),
			seen_count = seen_count + ?4 WHERE id = ?1`),
	}
	if err != nil {
		return fmt.Errorf("prepare statements on %s: %w", s.path, err)
	}
	return nil
}

// upsert adds rows of sightings (9 columns) to an aggregate table.
func upsert(table, key string) func(values string) string {
	return func(values string) string {
		return `INSERT INTO ` + table + ` (` + key + `, first_seen, last_seen, seen_count, local_count,
			verified_count, verified_local, verified_trusted, seq) VALUES ` + values + `
		ON CONFLICT(` + key + `) DO UPDATE SET
			first_seen  = min(first_seen, excluded.first_seen),
			last_seen   = max(last_seen, excluded.last_seen),
			seen_count  = seen_count + excluded.seen_count,
			local_count = local_count + excluded.local_count,
			verified_count   = verified_count + excluded.verified_count,
			verified_local   = verified_local + excluded.verified_local,
			verified_trusted = verified_trusted + excluded.verified_trusted,
			seq = excluded.seq`
	}
}

// Name implements hub.Sink.
func (s *Store) Name() string { return "sqlite" }

// Write stores the batch in one transaction. Aggregates are summed per key in memory first:
// a scan sends hundreds of messages from one IP, which then cost one upsert, not hundreds.
func (s *Store) Write(ctx context.Context, batch []*event.Event) error {
	_, err := s.WriteCount(ctx, batch)
	return err
}

// WriteCount is Write that also says how many events of the batch were new (the others were
// stored before): what an import added, whatever other writers add meanwhile.
func (s *Store) WriteCount(ctx context.Context, batch []*event.Event) (added int, err error) {
	if s.w == nil {
		return 0, fmt.Errorf("database %s is open read-only", s.path)
	}
	// The filter lock is held from before the first read to after the commit, so that the
	// check for other writers sees this batch either wholly or not at all.
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	defer func() {
		if err != nil {
			s.campaigns = nil // it may remember campaigns the rollback removed
		}
	}()
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store %d events in %s: %w", len(batch), s.path, err)
	}
	// A batch, once begun, is written whole: a context that can end costs the driver a
	// goroutine per statement (and database/sql one per transaction) to watch it, more than
	// a small batch's statements themselves. SQLite's busy timeout bounds the wait for the lock.
	ctx = context.WithoutCancel(ctx)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin write to %s: %w", s.path, err)
	}
	defer tx.Rollback()
	ips, nums, counts := aggregates{}, aggregates{}, dimensionCounts{}
	args := make([]any, 0, eventCols*rowSizes[0])
	an := analytics{}
	peers := keyPeers{}
	inserted := make(map[string]struct{}, rowSizes[0]) // new UUIDs of a chunk with duplicates
	counted := make(map[string]struct{}, len(batch))   // UUIDs of this batch already counted
	for rest := batch; len(rest) > 0; {
		size := chunkSize(len(rest))
		chunk := rest[:size]
		rest = rest[size:]
		args = args[:0]
		for _, e := range chunk {
			args = appendEventArgs(args, e)
		}
		res, err := tx.StmtContext(ctx, s.inserts.stmts[size]).ExecContext(ctx, args...)
		if err != nil {
			return 0, fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		all, err := s.newOnes(ctx, tx, res, len(chunk), inserted)
		if err != nil {
			return 0, fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		for _, e := range chunk {
			if _, ok := inserted[e.UUID]; !all && !ok {
				continue // already stored: counted before
			}
			if _, dup := counted[e.UUID]; dup {
				continue // twice in this batch (an import of two identical records)
			}
			counted[e.UUID] = struct{}{}
			added++
			sumEvent(e, s.labeler, ips, nums, peers, counts, &an)
		}
	}
	an.flush(counts)
	// Every key this batch touches gets the batch's change sequence: a blocklist stream
	// resumes after the last sequence it sent.
	var seq int64
	if len(ips) > 0 {
		if err := tx.StmtContext(ctx, s.nextSeq).QueryRowContext(ctx).Scan(&seq); err != nil {
			return 0, fmt.Errorf("advance the change sequence of %s: %w", s.path, err)
		}
	}
	if err := ips.write(ctx, tx, s.upsertIP, seq); err != nil {
		return 0, fmt.Errorf("update IP aggregates in %s: %w", s.path, err)
	}
	if err := nums.write(ctx, tx, s.upsertNum, seq); err != nil {
		return 0, fmt.Errorf("update number aggregates in %s: %w", s.path, err)
	}
	var newNumbers []string
	if len(nums) > 0 {
		added, err := s.addNumberKeys(ctx, tx)
		if err != nil {
			return 0, fmt.Errorf("update number match keys in %s: %w", s.path, err)
		}
		s.keys.num.addMatchKeys(added) // before the commit, as addAll below
		newNumbers = added
	}
	if err := peers.write(ctx, tx.StmtContext(ctx, s.insertPeer)); err != nil {
		return 0, fmt.Errorf("update peer sightings in %s: %w", s.path, err)
	}
	if err := counts.write(ctx, tx, s.upsertCount); err != nil {
		return 0, fmt.Errorf("update statistics in %s: %w", s.path, err)
	}
	if err := s.writeAnalytics(ctx, tx, &an, newNumbers); err != nil {
		return 0, fmt.Errorf("update analytics in %s: %w", s.path, err)
	}
	// Keys go into the filters before the commit: a lookup may then find a key the store
	// does not hold yet (SQLite answers), never the reverse.
	s.keys.ip.addAll(ips)
	s.keys.num.addAll(nums)
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit %d events to %s: %w", len(batch), s.path, err)
	}
	return added, nil
}

// newOnes says which events of a chunk the INSERT really added, so that a retried or
// re-imported event never counts twice in the aggregates. Usually all of them are new (fresh
// UUIDs). Otherwise the added rows are the last k rowids: the single writer assigns each new
// row max(rowid)+1, in VALUES order, so they are consecutive and end at LastInsertId.
func (s *Store) newOnes(ctx context.Context, tx *sql.Tx, res sql.Result, n int, into map[string]struct{}) (all bool, err error) {
	k, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	clear(into)
	if int(k) == n {
		return true, nil
	}
	if k == 0 {
		return false, nil
	}
	last, err := res.LastInsertId()
	if err != nil {
		return false, err
	}
	rows, err := tx.StmtContext(ctx, s.addedUUIDs).QueryContext(ctx, last-k+1, last)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return false, err
		}
		into[u] = struct{}{}
	}
	return false, rows.Err()
}

type aggregates map[string]*store.Aggregate

func (m aggregates) add(key string, e *event.Event) { store.AddSighting(m, key, e) }

func (m aggregates) write(ctx context.Context, tx *sql.Tx, st multiRow, seq int64) error {
	args := make([]any, 0, 9*len(m))
	for _, a := range m {
		args = append(args, a.Key, a.FirstSeen, a.LastSeen, a.Count, a.Local,
			a.Verified, a.VerifiedLocal, a.VerifiedTrusted, seq)
	}
	return st.exec(ctx, tx, args)
}

// keyPeer is one peer's report of one IP or number.
type keyPeer struct {
	list      store.List
	key, peer string
}

// keyPeers are the reports in a batch's new peer events, and whether the peer was trusted.
type keyPeers map[keyPeer]bool

func (m keyPeers) add(e *event.Event) {
	kp := keyPeer{store.IPAddresses, e.SourceIP, e.Peer}
	m[kp] = m[kp] || e.Trusted
	if store.CountsAsNumber(e.CalledNumber) {
		kp = keyPeer{store.CalledNumbers, e.CalledNumber, e.Peer}
		m[kp] = m[kp] || e.Trusted
	}
}

func (m keyPeers) write(ctx context.Context, st *sql.Stmt) error {
	for kp, trusted := range m {
		if _, err := st.ExecContext(ctx, int(kp.list), kp.key, kp.peer, trusted); err != nil {
			return err
		}
	}
	return nil
}

// addNumberKeys stores the match keys of the numbers this transaction added, which the
// called_numbers_added trigger noted in new_numbers.
// It returns them.
func (s *Store) addNumberKeys(ctx context.Context, tx *sql.Tx) ([]string, error) {
	added, err := scanStrings(tx.StmtContext(ctx, s.newNumbers).QueryContext(ctx))
	if err != nil || len(added) == 0 {
		return nil, err
	}
	if err := s.insertKeys.exec(ctx, tx, keyArgs(added)); err != nil {
		return nil, err
	}
	_, err = tx.StmtContext(ctx, s.clearNew).ExecContext(ctx)
	return added, err
}

type countKey struct {
	dim   store.Dimension
	hour  string
	value string
}

// dimensionCounts sums a batch's events per hour and value of each counted dimension.
type dimensionCounts map[countKey]int64

func (m dimensionCounts) write(ctx context.Context, tx *sql.Tx, st multiRow) error {
	args := make([]any, 0, 4*len(m))
	for k, n := range m {
		args = append(args, int(k.dim), k.hour, k.value, n)
	}
	return st.exec(ctx, tx, args)
}

// IP returns the aggregate of one source IP; ok is false when it was never seen.
func (s *Store) IP(ctx context.Context, ip string) (store.Aggregate, bool, error) {
	if !s.keys.ip.mayContain(ip) {
		return store.Aggregate{}, false, nil
	}
	return s.lookup(ctx, s.lookupIP, ip)
}

// Number returns the aggregate of one called number, matched exactly.
func (s *Store) Number(ctx context.Context, n string) (store.Aggregate, bool, error) {
	if !s.keys.num.mayContain(n) {
		return store.Aggregate{}, false, nil
	}
	return s.lookup(ctx, s.lookupNum, n)
}

func (s *Store) lookupSQL(table, key string) string {
	return `SELECT ` + s.aggregateColumns() + ` FROM ` + table + ` WHERE ` + key + ` = ?`
}

func (s *Store) lookup(ctx context.Context, st *sql.Stmt, val string) (store.Aggregate, bool, error) {
	a := store.Aggregate{Key: val}
	err := st.QueryRowContext(ctx, val).Scan(&a.FirstSeen, &a.LastSeen, &a.Count, &a.Local, &a.Peers, &a.TrustedPeers, &a.Verified,
		&a.VerifiedLocal, &a.VerifiedTrusted)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Aggregate{}, false, nil
	}
	if err != nil {
		return store.Aggregate{}, false, fmt.Errorf("look up %s in %s: %w", val, s.path, err)
	}
	return a, true, nil
}

// aggregateColumns are read with every aggregate, after its key (a database opened read-only
// may be older than verification: its keys have no verified sightings).
func (s *Store) aggregateColumns() string {
	if s.version < 6 {
		return `first_seen, last_seen, seen_count, local_count, peers, trusted_peers, 0, 0, 0`
	}
	return `first_seen, last_seen, seen_count, local_count, peers, trusted_peers, verified_count, verified_local, verified_trusted`
}

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

// Count returns how many IPs or numbers were last seen at or after since. The whole list's size is kept in the totals table; a window
// counts the last-seen index range.
func (s *Store) Count(ctx context.Context, l store.List, since string) (int64, error) {
	table, _, err := listOf(l)
	if err != nil {
		return 0, err
	}
	var n int64
	if since == "" {
		err = s.r.QueryRowContext(ctx, `SELECT value FROM totals WHERE name = ?`, table).Scan(&n)
	} else {
		err = s.bulk.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` WHERE last_seen >= ?`, since).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count %s in %s: %w", table, s.path, err)
	}
	return n, nil
}

// Each calls fn for the IPs or numbers o selects, newest first, streaming.
//
// No read transaction stays open while fn runs (a client reading a list slowly would pin the
// WAL, which then grows without bound under writes): entries are read a page at a time into
// memory. A list longer than a page is first copied, in one read, into a temporary table of
// the connection (a file in the temp directory), and paged from there: the stream is one
// consistent snapshot that never repeats or skips an entry, however long it takes.
func (s *Store) Each(ctx context.Context, l store.List, o store.ListOptions, fn func(store.Aggregate) error) error {
	table, key, err := listOf(l)
	if err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("list %s in %s: %w", table, s.path, err) }
	limit := int64(-1) // SQLite: no limit
	if o.Limit > 0 {
		limit = int64(o.Limit)
	}
	selection := `SELECT ` + key + `, ` + s.aggregateColumns() + ` FROM ` + table +
		` WHERE last_seen >= ? ORDER BY last_seen DESC, ` + key + ` DESC LIMIT ? OFFSET ?`
	if o.Limit > 0 && o.Limit <= listPage {
		page, err := readAggregates(ctx, s.bulk, selection, o.Since, limit, max(o.Offset, 0))
		if err != nil {
			return wrap(err)
		}
		return eachOf(page, fn)
	}
	if !s.snapshots {
		return s.eachByKey(ctx, table, key, o, fn, wrap)
	}
	cctx, cancel := context.WithTimeout(ctx, snapshotWait)
	conn, err := s.snap.Conn(cctx)
	busy := errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err != nil {
		if busy {
			err = fmt.Errorf("%d long lists are being read: %w", snapshotStreams, store.ErrBusy)
		}
		return wrap(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `DROP TABLE IF EXISTS temp.list_snapshot`); err != nil {
		return wrap(err)
	}
	// Rows go in in the list's order, so rowid is the position in the list.
	if err := createSnapshot(ctx, conn, selection, o.Since, limit, max(o.Offset, 0)); err != nil {
		if ctx.Err() != nil {
			return wrap(err)
		}
		// No room for the snapshot (a read-only or full temp directory): page by key instead.
		s.snapshotErr.CompareAndSwap(nil, &err)
		return s.eachByKey(ctx, table, key, o, fn, wrap)
	}
	defer conn.ExecContext(context.Background(), `DROP TABLE IF EXISTS temp.list_snapshot`)
	for after := int64(0); ; after += listPage {
		page, err := readAggregates(ctx, conn, `SELECT * FROM temp.list_snapshot WHERE rowid > ? ORDER BY rowid LIMIT ?`, after, listPage)
		if err != nil {
			return wrap(err)
		}
		if err := eachOf(page, fn); err != nil || len(page) < listPage {
			return err
		}
	}
}

// eachByKey pages a list by its order (last_seen, key), for a store that cannot make
// snapshots (opened read-only by a tool): an entry seen again while the list is read moves
// ahead of the cursor and is missed; nothing is listed twice.
func (s *Store) eachByKey(ctx context.Context, table, key string, o store.ListOptions, fn func(store.Aggregate) error, wrap func(error) error) error {
	left := o.Limit // 0: no limit
	page, err := readAggregates(ctx, s.bulk, `SELECT `+key+`, `+s.aggregateColumns()+` FROM `+table+
		` WHERE last_seen >= ? ORDER BY last_seen DESC, `+key+` DESC LIMIT ? OFFSET ?`, o.Since, listPage, max(o.Offset, 0))
	for {
		if err != nil {
			return wrap(err)
		}
		if left > 0 && len(page) > left {
			page = page[:left]
		}
		if err := eachOf(page, fn); err != nil {
			return err
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
		page, err = readAggregates(ctx, s.bulk, `SELECT `+key+`, `+s.aggregateColumns()+` FROM `+table+
			` WHERE last_seen >= ?1 AND (last_seen < ?2 OR last_seen = ?2 AND `+key+` < ?3)
			ORDER BY last_seen DESC, `+key+` DESC LIMIT ?4`, o.Since, last.LastSeen, last.Key, listPage)
	}
}

// SnapshotError is the first failure to copy a long list into a temporary table (the temp
// directory, TMPDIR or /var/tmp or /tmp, not writable or full), or nil: lists are then paged
// by key, where an entry seen again while the list is read can be missed.
func (s *Store) SnapshotError() error {
	if err := s.snapshotErr.Load(); err != nil {
		return *err
	}
	return nil
}

// createSnapshot copies a list into the connection's temporary table (a variable: tests make
// it fail).
var createSnapshot = func(ctx context.Context, conn *sql.Conn, selection string, args ...any) error {
	_, err := conn.ExecContext(ctx, `CREATE TEMP TABLE list_snapshot AS `+selection, args...)
	return err
}

// listPage is how many list entries are read at a time.
const listPage = 1000

// querier is a pool or one of its connections.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readAggregates reads a query's aggregates into memory (its read transaction ends with it).
func readAggregates(ctx context.Context, db querier, q string, args ...any) ([]store.Aggregate, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var out []store.Aggregate
	err = scanAggregates(rows, func(a store.Aggregate) error {
		out = append(out, a)
		return nil
	}, func(err error) error { return err })
	return out, err
}

func eachOf(page []store.Aggregate, fn func(store.Aggregate) error) error {
	for _, a := range page {
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

func scanAggregates(rows *sql.Rows, fn func(store.Aggregate) error, wrap func(error) error) error {
	defer rows.Close()
	for rows.Next() {
		var a store.Aggregate
		if err := rows.Scan(&a.Key, &a.FirstSeen, &a.LastSeen, &a.Count, &a.Local, &a.Peers, &a.TrustedPeers, &a.Verified,
			&a.VerifiedLocal, &a.VerifiedTrusted); err != nil {
			return wrap(err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return wrap(err)
	}
	return nil
}

// MatchNumbers returns the stored numbers n matches nationally: the number itself, and every number sharing one of
// its national-match keys (an index probe per key).
func (s *Store) MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error) {
	keys := event.NumberQueryKeys(n)
	// The number filter also holds every stored number's match keys: most numbers a PBX
	// asks about match nothing, and are answered here.
	maybe := s.keys.num.mayContain(n)
	for _, k := range keys {
		maybe = maybe || s.keys.num.mayContain(k)
	}
	if !maybe {
		return nil, nil
	}
	st, err := s.matchStmt(ctx, len(keys))
	if err != nil {
		return nil, fmt.Errorf("match number %s in %s: %w", n, s.path, err)
	}
	args := make([]any, 0, len(keys)+1)
	args = append(args, n)
	for _, k := range keys {
		args = append(args, k)
	}
	out, err := readAggregates(ctx, stmtQuerier{st}, "", args...)
	if err != nil {
		return nil, fmt.Errorf("match number %s in %s: %w", n, s.path, err)
	}
	return out, nil
}

// matchStmt returns the national-match query for nkeys match keys, prepared once.
func (s *Store) matchStmt(ctx context.Context, nkeys int) (*sql.Stmt, error) {
	s.matchMu.Lock()
	defer s.matchMu.Unlock()
	if st := s.matchNums[nkeys]; st != nil {
		return st, nil
	}
	q := `SELECT called_number, ` + s.aggregateColumns() + ` FROM called_numbers WHERE called_number = ?`
	if nkeys > 0 {
		q += ` OR called_number IN (SELECT called_number FROM number_keys WHERE match_key IN (?` +
			strings.Repeat(",?", nkeys-1) + `))`
	}
	q += ` ORDER BY last_seen DESC, called_number DESC`
	st, err := s.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if s.matchNums == nil {
		s.matchNums = map[int]*sql.Stmt{}
	}
	s.matchNums[nkeys] = st
	return st, nil
}

// stmtQuerier runs a prepared statement where a querier is expected (the query string is
// the statement's own).
type stmtQuerier struct{ st *sql.Stmt }

func (q stmtQuerier) QueryContext(ctx context.Context, _ string, args ...any) (*sql.Rows, error) {
	return q.st.QueryContext(ctx, args...)
}

// Top returns the most frequent values of a dimension since the hour of since.
func (s *Store) Top(ctx context.Context, d store.Dimension, since string, limit int) ([]store.ValueCount, int64, error) {
	from := store.HourOf(since)
	var distinct int64
	if err := s.bulk.QueryRowContext(ctx, `SELECT count(DISTINCT value) FROM event_counts
		WHERE dimension = ? AND hour >= ?`, int(d), from).Scan(&distinct); err != nil {
		return nil, 0, fmt.Errorf("count statistics in %s: %w", s.path, err)
	}
	lim := int64(-1)
	if limit > 0 {
		lim = int64(limit)
	}
	rows, err := s.bulk.QueryContext(ctx, `SELECT value, sum(seen_count) AS n FROM event_counts
		WHERE dimension = ? AND hour >= ? GROUP BY value ORDER BY n DESC, value LIMIT ?`, int(d), from, lim)
	if err != nil {
		return nil, 0, fmt.Errorf("read statistics from %s: %w", s.path, err)
	}
	defer rows.Close()
	var out []store.ValueCount
	for rows.Next() {
		var v store.ValueCount
		if err := rows.Scan(&v.Value, &v.Count); err != nil {
			return nil, 0, fmt.Errorf("read statistics from %s: %w", s.path, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read statistics from %s: %w", s.path, err)
	}
	return out, distinct, nil
}

// CountEvents returns how many raw events are stored.
func (s *Store) CountEvents(ctx context.Context) (int64, error) {
	var n int64
	if err := s.bulk.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count events in %s: %w", s.path, err)
	}
	return n, nil
}

// Events calls fn for every stored event, oldest first, until fn returns an error.
//
// It reads a page at a time by id, each in a read transaction of its own: an export beside a
// running node never pins the node's WAL. Events stored meanwhile are included (their ids are
// higher); none is read twice.
func (s *Store) Events(ctx context.Context, fn func(*event.Event) error) error {
	for after := int64(0); ; {
		page, ids, err := s.readEvents(ctx, `SELECT id, `+s.readColumns()+` FROM events WHERE id > ? ORDER BY id LIMIT ?`, after, eventPage)
		if err != nil {
			return fmt.Errorf("read events from %s: %w", s.path, err)
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

// eventPage is how many events are read at a time (at most 16 KiB of message each).
const eventPage = 500

// Recent calls fn for at most limit events after the position (since, afterID) in
// (event_timestamp, id) order, with their Peer and Sealed fields, and each one's id: what a
// peer catching up is served (it implements peer.EventSource).
func (s *Store) Recent(ctx context.Context, since string, afterID int64, limit int, fn func(e *event.Event, id int64) error) error {
	// Written out rather than as a row value so that SQLite walks the events_time index.
	// Read whole before fn runs: fn sends to a peer, which may read slowly. The caller bounds
	// limit (catch-up asks 500 at most).
	page, ids, err := s.readEvents(ctx, `SELECT id, `+s.readColumns()+` FROM events
		WHERE event_timestamp >= ?1 AND (event_timestamp > ?1 OR id > ?2)
		ORDER BY event_timestamp, id LIMIT ?3`, since, afterID, limit)
	if err != nil {
		return fmt.Errorf("read recent events from %s: %w", s.path, err)
	}
	for i, e := range page {
		if err := fn(e, ids[i]); err != nil {
			return err
		}
	}
	return nil
}

// readEvents reads a query's events and ids into memory (its read transaction ends with it).
func (s *Store) readEvents(ctx context.Context, q string, args ...any) ([]*event.Event, []int64, error) {
	rows, err := s.bulk.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var events []*event.Event
	var ids []int64
	for rows.Next() {
		var e event.Event
		var id int64
		var payload string
		if err := rows.Scan(&id, &e.UUID, &e.Timestamp, &e.AppName, &e.AppVersion, &e.NodeID,
			&e.CollectedMethod, &e.Transport, &e.SourceIP, &e.SourcePort, &e.DestinationIP,
			&e.DestinationPort, &e.CalledNumber, &e.SIPMethod, &e.SIPUserAgent, &e.SIPMessage,
			&e.FromPeer, &e.Peer, &e.Sealed, &e.SIPMessageLength, &e.SourceVerified, &e.Tool, &e.UASpoofed, &payload, &e.RepeatCount); err != nil {
			return nil, nil, err
		}
		if e.Payload, err = store.ParsePayload(payload); err != nil {
			return nil, nil, fmt.Errorf("event %s: %w", e.UUID, err)
		}
		events, ids = append(events, &e), append(ids, id)
	}
	return events, ids, rows.Err()
}

// IntegrityCheck runs PRAGMA integrity_check and returns an error unless it says "ok".
func (s *Store) IntegrityCheck(ctx context.Context) error {
	var res string
	if err := s.bulk.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check of %s: %w", s.path, err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check of %s failed: %s", s.path, res)
	}
	return nil
}

// Close checkpoints the WAL into the database file and closes both pools.
func (s *Store) Close() error {
	s.filtersOnce.Do(func() {}) // none start after this
	if s.stopCheck != nil {
		s.stopCheck()
		<-s.checkDone
	}
	var errs []error
	s.matchMu.Lock()
	for _, st := range s.matchNums {
		st.Close()
	}
	s.matchNums = nil
	s.matchMu.Unlock()
	if s.r != nil {
		errs = append(errs, s.r.Close(), s.bulk.Close())
		if s.snap != nil {
			errs = append(errs, s.snap.Close())
		}
	}
	if s.w == nil { // read-only
		return errors.Join(errs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		errs = append(errs, fmt.Errorf("checkpoint %s: %w", s.path, err))
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}
