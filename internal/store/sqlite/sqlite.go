// Package sqlite is the embedded default store: one SQLite file in WAL mode, written by a
// single goroutine in batched transactions, read through a separate read-only pool.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// migrations are applied in order; PRAGMA user_version records how many have run. Append
// only: never edit one that has shipped.
var migrations = []string{
	`CREATE TABLE events (
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
	CREATE INDEX called_numbers_last_seen ON called_numbers(last_seen);`,
}

// Store is the SQLite backend.
type Store struct {
	path string
	w    *sql.DB // one connection: the single writer
	r    *sql.DB // read-only pool for the API and tools

	inserts   map[int]*sql.Stmt // multi-row event inserts by row count
	upsertIP  *sql.Stmt
	upsertNum *sql.Stmt
}

// insertSizes are the row counts of the prepared multi-row INSERTs, largest first: a batch is
// cut into chunks of these sizes. Fewer, larger statements cost less per event; 64 rows stay
// well under SQLite's 32766 bound parameters (16 a row). They are prepared at open because
// the single writer connection is busy inside a transaction while a batch is written.
var insertSizes = []int{64, 8, 1}

const eventColumns = `event_uuid, event_timestamp, app_name, app_version, created_by_node_id,
	collected_method, transport_type, source_ip, source_port, destination_ip, destination_port,
	called_number, sip_method, sip_user_agent, sip_message, from_peer`

// insertSQL inserts n events, skipping UUIDs already stored.
func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO events (" + eventColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	b.WriteString(" ON CONFLICT(event_uuid) DO NOTHING")
	return b.String()
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the database at path and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create directory for database %s: %w", path, err)
		}
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{path: path, w: w}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	s.r, err = sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s for reading: %w", path, err)
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// dsn sets the pragmas on every connection: WAL so readers never block the writer, a busy
// timeout so bursts wait instead of failing, synchronous=NORMAL (safe in WAL against a killed
// process; only an OS crash can lose the last transactions).
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.w.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version of %s (is it an SQLite database?): %w", s.path, err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database %s has schema version %d, newer than this dialtrap knows (%d): upgrade dialtrap",
			s.path, version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", s.path, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to schema version %d: %w", s.path, v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", s.path, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s to schema version %d: %w", s.path, v+1, err)
		}
	}
	return nil
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
	s.inserts = map[int]*sql.Stmt{}
	for _, n := range insertSizes {
		s.inserts[n] = prep(insertSQL(n))
	}
	s.upsertIP = prep(upsert("ip_addresses", "ip_address"))
	s.upsertNum = prep(upsert("called_numbers", "called_number"))
	if err != nil {
		return fmt.Errorf("prepare statements on %s: %w", s.path, err)
	}
	return nil
}

func upsert(table, key string) string {
	return `INSERT INTO ` + table + ` (` + key + `, first_seen, last_seen, seen_count) VALUES (?,?,?,?)
		ON CONFLICT(` + key + `) DO UPDATE SET
			first_seen = min(first_seen, excluded.first_seen),
			last_seen  = max(last_seen, excluded.last_seen),
			seen_count = seen_count + excluded.seen_count`
}

// Name implements hub.Sink.
func (s *Store) Name() string { return "sqlite" }

// Write stores the batch in one transaction. Aggregates are summed per key in memory first:
// a scan sends hundreds of messages from one IP, which then cost one upsert, not hundreds.
func (s *Store) Write(ctx context.Context, batch []*event.Event) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin write to %s: %w", s.path, err)
	}
	defer tx.Rollback()
	ips, nums := aggregates{}, aggregates{}
	args := make([]any, 0, 16*insertSizes[0])
	inserted := make(map[string]struct{}, insertSizes[0]) // new UUIDs of a chunk with duplicates
	for rest := batch; len(rest) > 0; {
		size := insertSizes[len(insertSizes)-1]
		for _, n := range insertSizes {
			if len(rest) >= n {
				size = n
				break
			}
		}
		chunk := rest[:size]
		rest = rest[size:]
		args = args[:0]
		for _, e := range chunk {
			args = append(args, e.UUID, e.Timestamp, e.AppName, e.AppVersion, e.NodeID,
				e.CollectedMethod, e.Transport, e.SourceIP, e.SourcePort, e.DestinationIP,
				e.DestinationPort, e.CalledNumber, e.SIPMethod, e.SIPUserAgent, e.SIPMessage, e.FromPeer)
		}
		res, err := tx.StmtContext(ctx, s.inserts[size]).ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		all, err := s.newOnes(ctx, tx, res, len(chunk), inserted)
		if err != nil {
			return fmt.Errorf("store %d events in %s: %w", len(chunk), s.path, err)
		}
		for _, e := range chunk {
			if _, ok := inserted[e.UUID]; !all && !ok {
				continue // already stored: counted before
			}
			ips.add(e.SourceIP, e.Timestamp)
			if store.CountsAsNumber(e.CalledNumber) {
				nums.add(e.CalledNumber, e.Timestamp)
			}
		}
	}
	if err := ips.write(ctx, tx.StmtContext(ctx, s.upsertIP)); err != nil {
		return fmt.Errorf("update IP aggregates in %s: %w", s.path, err)
	}
	if err := nums.write(ctx, tx.StmtContext(ctx, s.upsertNum)); err != nil {
		return fmt.Errorf("update number aggregates in %s: %w", s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit %d events to %s: %w", len(batch), s.path, err)
	}
	return nil
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
	rows, err := tx.QueryContext(ctx, `SELECT event_uuid FROM events WHERE id BETWEEN ? AND ?`, last-k+1, last)
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

func (m aggregates) add(key, ts string) {
	a, ok := m[key]
	if !ok {
		m[key] = &store.Aggregate{Key: key, FirstSeen: ts, LastSeen: ts, Count: 1}
		return
	}
	a.FirstSeen = min(a.FirstSeen, ts)
	a.LastSeen = max(a.LastSeen, ts)
	a.Count++
}

func (m aggregates) write(ctx context.Context, st *sql.Stmt) error {
	for _, a := range m {
		if _, err := st.ExecContext(ctx, a.Key, a.FirstSeen, a.LastSeen, a.Count); err != nil {
			return err
		}
	}
	return nil
}

// IP implements store.Store.
func (s *Store) IP(ctx context.Context, ip string) (store.Aggregate, bool, error) {
	return s.lookup(ctx, "ip_addresses", "ip_address", ip)
}

// Number implements store.Store.
func (s *Store) Number(ctx context.Context, n string) (store.Aggregate, bool, error) {
	return s.lookup(ctx, "called_numbers", "called_number", n)
}

func (s *Store) lookup(ctx context.Context, table, key, val string) (store.Aggregate, bool, error) {
	a := store.Aggregate{Key: val}
	err := s.r.QueryRowContext(ctx, `SELECT first_seen, last_seen, seen_count FROM `+table+
		` WHERE `+key+` = ?`, val).Scan(&a.FirstSeen, &a.LastSeen, &a.Count)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Aggregate{}, false, nil
	}
	if err != nil {
		return store.Aggregate{}, false, fmt.Errorf("look up %s in %s: %w", val, s.path, err)
	}
	return a, true, nil
}

// CountEvents implements store.Store.
func (s *Store) CountEvents(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count events in %s: %w", s.path, err)
	}
	return n, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, fn func(*event.Event) error) error {
	rows, err := s.r.QueryContext(ctx, `SELECT event_uuid, event_timestamp, app_name, app_version,
		created_by_node_id, collected_method, transport_type, source_ip, source_port,
		destination_ip, destination_port, called_number, sip_method, sip_user_agent, sip_message,
		from_peer FROM events ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read events from %s: %w", s.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e event.Event
		if err := rows.Scan(&e.UUID, &e.Timestamp, &e.AppName, &e.AppVersion, &e.NodeID,
			&e.CollectedMethod, &e.Transport, &e.SourceIP, &e.SourcePort, &e.DestinationIP,
			&e.DestinationPort, &e.CalledNumber, &e.SIPMethod, &e.SIPUserAgent, &e.SIPMessage,
			&e.FromPeer); err != nil {
			return fmt.Errorf("read event from %s: %w", s.path, err)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read events from %s: %w", s.path, err)
	}
	return nil
}

// IntegrityCheck runs PRAGMA integrity_check and returns an error unless it says "ok".
func (s *Store) IntegrityCheck(ctx context.Context) error {
	var res string
	if err := s.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check of %s: %w", s.path, err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check of %s failed: %s", s.path, res)
	}
	return nil
}

// Close checkpoints the WAL into the database file and closes both pools.
func (s *Store) Close() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		errs = append(errs, fmt.Errorf("checkpoint %s: %w", s.path, err))
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}
