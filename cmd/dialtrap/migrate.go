package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/fsutil"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/postgres"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// exitVerify is dialtrap migrate's exit status when it copied every event but the counts of
// source and destination do not match (what differs is printed).
const exitVerify = 3

// Batch sizes of migrate: each batch is one read and one write transaction, and is held in
// memory whole (up to 16 KiB of message an event).
const (
	migrateBatch    = 5000
	migrateMaxBatch = 10000
)

// migrateSource is what migrate reads from: events in a resumable order, and the counts the
// verification compares.
type migrateSource interface {
	// Recent calls fn for at most limit events after the position (since, afterID) in
	// (event_timestamp, id) order, with their peer fields and ids.
	Recent(ctx context.Context, since string, afterID int64, limit int, fn func(e *event.Event, id int64) error) error
	CountEvents(ctx context.Context) (int64, error)
	Count(ctx context.Context, l store.List, since string) (int64, error)
	Each(ctx context.Context, l store.List, o store.ListOptions, fn func(store.Aggregate) error) error
}

// migrateDestination is what migrate writes to.
type migrateDestination interface {
	// WriteCount stores a batch idempotently (by event_uuid) and says how many were new.
	WriteCount(ctx context.Context, batch []*event.Event) (int, error)
	CountEvents(ctx context.Context) (int64, error)
	Count(ctx context.Context, l store.List, since string) (int64, error)
	SetLabeler(store.Labeler)
}

// migrateStore is a store opened by openStore: either end of a migration.
type migrateStore interface {
	migrateSource
	migrateDestination
	Close() error
}

// trustFiller is a source that keeps peer trust per key rather than per event, and sets
// Trusted on the events it read back (sqlite.Store.FillTrusted). Without it, peer events
// are copied untrusted.
type trustFiller interface {
	FillTrusted(ctx context.Context, batch []*event.Event) error
}

// epochReader is a store with an epoch, made with its schema: a checkpoint of an earlier
// database at the same path or URL is told apart.
type epochReader interface {
	ChangeSeq(ctx context.Context) (epoch, seq int64, err error)
}

// Store kinds a spec names.
const (
	kindSQLite   = "sqlite"
	kindPostgres = "postgres"
)

// storeSpec is a store named on the command line: sqlite:PATH, a bare PATH ending in .db,
// .sqlite or .sqlite3, or a postgres:// or postgresql:// URL.
type storeSpec struct {
	kind string
	path string   // sqlite: the database file, absolute
	url  *url.URL // postgres, as given (password included: never print it)
}

func parseSpec(s string) (storeSpec, error) {
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" && u.Query().Get("host") == "" {
			// url.Parse's error quotes the URL, password and all.
			return storeSpec{}, errors.New("not a valid postgres:// URL (not shown: it may hold a password); the form is postgres://USER:PASSWORD@HOST:PORT/DATABASE")
		}
		return storeSpec{kind: kindPostgres, url: u}, nil
	case strings.HasPrefix(lower, "sqlite:"):
		s = s[len("sqlite:"):]
	case strings.HasSuffix(lower, ".db"), strings.HasSuffix(lower, ".sqlite"), strings.HasSuffix(lower, ".sqlite3"):
	case strings.Contains(s, "://"):
		return storeSpec{}, fmt.Errorf("%q: unknown kind of store; give sqlite:PATH or a postgres:// URL", config.RedactURL(s))
	default:
		return storeSpec{}, fmt.Errorf("%q: give sqlite:PATH (or a path ending in .db, .sqlite or .sqlite3) or a postgres:// URL", s)
	}
	if s == "" {
		return storeSpec{}, errors.New("sqlite: names no file; give sqlite:PATH")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return storeSpec{}, fmt.Errorf("%s: %w", s, err)
	}
	// Through symbolic links: the same database under two names is one identity.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return storeSpec{kind: kindSQLite, path: abs}, nil
}

// String names the store for messages, without a password.
func (s storeSpec) String() string {
	if s.kind == kindSQLite {
		return "sqlite:" + s.path
	}
	return config.RedactURL(s.url.String())
}

// identity is what a checkpoint is keyed by: the file, or the server, user and database (not
// connection options such as sslmode). It holds no password.
func (s storeSpec) identity() string {
	if s.kind == kindSQLite {
		return "sqlite:" + s.path
	}
	host := strings.ToLower(s.url.Host)
	if s.url.Port() == "" && host != "" {
		host += ":5432"
	}
	if h := s.url.Query().Get("host"); h != "" { // a Unix socket directory
		host += "(" + h + ")"
	}
	return "postgres://" + s.url.User.Username() + "@" + host + s.url.Path
}

// openStore opens the store a spec names; readOnly where the backend can (the source of a
// migration, which may be a running node's database).
func openStore(ctx context.Context, spec storeSpec, readOnly bool) (migrateStore, error) {
	switch spec.kind {
	case kindSQLite:
		open := sqlite.Open
		if readOnly {
			open = sqlite.OpenReadOnly
		}
		st, err := open(ctx, spec.path)
		if err != nil {
			return nil, err
		}
		return st, nil
	case kindPostgres:
		open := postgres.Open
		if readOnly {
			open = postgres.OpenReadOnly
		}
		st, err := open(ctx, spec.url.String())
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	return nil, fmt.Errorf("%s: unknown kind of store %q", spec, spec.kind)
}

// runMigrate copies every event of one store into another, resumably, then compares counts.
func runMigrate(args []string, stdout, stderr io.Writer) int {
	f := newFlags("migrate", "migrate --from SPEC --to SPEC [flags]",
		"Copies every event of one store into another, in batches, oldest first, with peers'\n"+
			"provenance; each store's aggregates and statistics are rebuilt from the events it gets.\n"+
			"SPEC: sqlite:PATH (or a PATH ending in .db, .sqlite or .sqlite3), or a postgres:// URL.\n"+
			"The source is opened read-only: migrating a running node's database is safe. After\n"+
			"each batch a checkpoint is kept in the --state file: a migration interrupted (Ctrl-C,\n"+
			"kill, a crash) resumes where it stopped when run again; run again after it finished,\n"+
			"it copies what the source got since. Writes are idempotent, so nothing counts twice.\n"+
			"At the end it compares the event and list counts of both stores.\n"+
			"Exit status: 0 copied and verified, 1 error, 2 usage, 3 copied but the counts differ.", stdout, stderr)
	from := f.String("from", "", "the store to copy from (sqlite:PATH, PATH.db or postgres://...)")
	to := f.String("to", "", "the store to copy into; created if it is an SQLite file that does not exist")
	statePath := f.String("state", "", "checkpoint file (default: the --to SQLite file + .migrate.json, else dialtrap-migrate-DATABASE.json here)")
	restart := f.Bool("restart", false, "ignore the checkpoint and copy everything again (nothing is counted twice)")
	batch := f.Int("batch", migrateBatch, fmt.Sprintf("events per read and write transaction (1 to %d)", migrateMaxBatch))
	home := f.String("home-country", "", "ISO 3166 code (DE) national dial strings are read in for the analytics, as the node's")
	quiet := f.BoolP("quiet", "q", false, "no progress on standard error")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap migrate -h)", f.Arg(0))
	}
	if *from == "" || *to == "" {
		return f.fail(exitUsage, "give both --from and --to (see dialtrap migrate -h)")
	}
	if *batch < 1 || *batch > migrateMaxBatch {
		return f.fail(exitUsage, "--batch %d: give 1 to %d", *batch, migrateMaxBatch)
	}
	src, err := parseSpec(*from)
	if err != nil {
		return f.fail(exitUsage, "--from: %v", err)
	}
	dst, err := parseSpec(*to)
	if err != nil {
		return f.fail(exitUsage, "--to: %v", err)
	}
	if src.identity() == dst.identity() || src.kind == kindSQLite && dst.kind == kindSQLite && same(src.path, dst.path) {
		return f.fail(exitUsage, "--from and --to name the same store (%s): migrate into another one", dst)
	}
	if src.kind == kindSQLite {
		if _, err := os.Stat(src.path); err != nil {
			return f.fail(exitUsage, "--from: no database at %s (%v)", src.path, errors.Unwrap(err))
		}
	}
	if *statePath == "" {
		// One default file per destination database: migrations into two databases from
		// one directory keep their own checkpoints.
		if dst.kind == kindSQLite {
			*statePath = dst.path + ".migrate.json"
		} else {
			*statePath = "dialtrap-migrate-" + path.Base(dst.url.Path) + ".json"
		}
	}
	ctx, stop := signalContext()
	defer stop()
	// The destination's directory may not exist yet: SQLite would make it.
	if err := os.MkdirAll(filepath.Dir(*statePath), 0o750); err != nil {
		return f.fail(exitRuntime, "checkpoint: %v (give a writable --state FILE)", err)
	}
	lock, pid, err := fsutil.Lock(*statePath + ".lock")
	if errors.Is(err, fsutil.ErrLocked) {
		return f.fail(exitRuntime, "another dialtrap migrate (pid %d) is using the checkpoint %s: wait for it to end, or give another --state", pid, *statePath)
	}
	if err != nil {
		return f.fail(exitRuntime, "checkpoint: %v (give a writable --state FILE)", err)
	}
	defer lock.Close()

	code, err := migrate(ctx, migrateOptions{
		from: src, to: dst, statePath: *statePath, restart: *restart, batch: *batch,
		home: strings.ToUpper(*home), quiet: *quiet,
	}, stdout, stderr)
	if err != nil {
		f.fail(code, "%v", err)
	}
	return code
}

type migrateOptions struct {
	from, to  storeSpec
	statePath string
	restart   bool
	batch     int
	home      string
	quiet     bool
}

// migrate opens both stores, copies and verifies; it returns the exit status and the error
// to print, if any.
func migrate(ctx context.Context, o migrateOptions, stdout, stderr io.Writer) (int, error) {
	src, err := openStore(ctx, o.from, true)
	if err != nil {
		return exitRuntime, fmt.Errorf("--from: %w", err)
	}
	defer src.Close()
	dst, err := openStore(ctx, o.to, false)
	if err != nil {
		return exitRuntime, fmt.Errorf("--to: %w", err)
	}
	defer dst.Close()
	dst.SetLabeler(intel.NewLabeler(o.home))

	srcID, dstID := withEpoch(ctx, o.from.identity(), src), withEpoch(ctx, o.to.identity(), dst)
	st, err := loadState(o.statePath)
	if err != nil {
		return exitRuntime, err
	}
	switch {
	case st != nil && (st.Source != srcID || st.Destination != dstID) && !o.restart:
		return exitUsage, fmt.Errorf("%s is the checkpoint of migrating %s to %s, not %s to %s: give another --state, or --restart to start this one over (it replaces the checkpoint)",
			o.statePath, st.Source, st.Destination, srcID, dstID)
	case st == nil || o.restart:
		fresh := &migrateState{Version: stateVersion, Source: srcID, Destination: dstID, Started: time.Now().UTC().Format(time.RFC3339)}
		if st != nil && st.Source == srcID && st.Destination == dstID {
			// Started over into the same destination: it was empty (or not) before the first run.
			fresh.DestinationWasEmpty = st.DestinationWasEmpty
		} else {
			n, err := dst.CountEvents(ctx)
			if err != nil {
				return exitRuntime, err
			}
			fresh.DestinationWasEmpty = n == 0
		}
		st = fresh
		// Saved before the first batch: a kill after its commit must not lose whether the
		// destination was empty.
		if err := saveState(o.statePath, st); err != nil {
			return exitRuntime, err
		}
	case st.Copied > 0:
		if !o.quiet {
			fmt.Fprintf(stderr, "dialtrap migrate: resuming from the checkpoint in %s: %d events copied before, up to %s\n",
				o.statePath, st.Copied, st.Since)
		}
	}

	total, err := src.CountEvents(ctx)
	if err != nil {
		return exitRuntime, err
	}
	m := &migration{src: src, dst: dst, batch: o.batch, state: st,
		save:     func(st *migrateState) error { return saveState(o.statePath, st) },
		progress: newMigrateProgress(stderr, o.quiet, st.Copied),
	}
	began := time.Now()
	copied, added, err := m.run(ctx, total)
	elapsed := time.Since(began)
	if err != nil {
		if ctx.Err() != nil {
			return exitRuntime, fmt.Errorf("interrupted after %d events (%d in all): run the same command again to resume", copied, st.Copied)
		}
		return exitRuntime, fmt.Errorf("%w (the checkpoint in %s keeps what was copied: run the same command again to resume)", err, o.statePath)
	}
	rate := float64(copied) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(stdout, "copied %d events in %s (%.0f events/s), %d new in the destination; %d copied in all\n",
		copied, elapsed.Round(time.Millisecond), rate, added, st.Copied)

	v, err := verify(ctx, src, dst, st)
	if err != nil {
		return exitRuntime, fmt.Errorf("verify: %w", err)
	}
	v.print(stdout, o.from, o.to)
	for _, w := range v.warnings {
		fmt.Fprintf(stderr, "dialtrap migrate: warning: %s\n", w)
	}
	if len(v.problems) > 0 {
		return exitVerify, fmt.Errorf("verification failed:\n  - %s", strings.Join(v.problems, "\n  - "))
	}
	fmt.Fprintln(stdout, "verified: the destination holds every event copied, and every IP and number of the source")
	return exitOK, nil
}

// withEpoch adds the store's epoch to its identity. A store without one (an SQLite database
// older than schema 6, read-only) is known by its path alone.
func withEpoch(ctx context.Context, id string, st any) string {
	if e, ok := st.(epochReader); ok {
		if epoch, _, err := e.ChangeSeq(ctx); err == nil {
			return fmt.Sprintf("%s (epoch %d)", id, epoch)
		}
	}
	return id
}

// testHookCommitted, when set (by tests), runs after each batch is committed to the
// destination and before its checkpoint is saved: the window a kill must survive.
var testHookCommitted func(batches int)

// migration is one run of the copy.
type migration struct {
	src      migrateSource
	dst      migrateDestination
	batch    int
	state    *migrateState
	save     func(*migrateState) error
	progress *migrateProgress
}

// run copies the events after the checkpoint, batch by batch, saving the checkpoint after
// each commit. It returns how many events this run copied and how many were new.
func (m *migration) run(ctx context.Context, total int64) (copied, added int64, err error) {
	defer m.progress.finish()
	filler, _ := m.src.(trustFiller)
	batch := make([]*event.Event, 0, m.batch)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return copied, added, err
		}
		batch = batch[:0]
		var since string
		var afterID int64
		err := m.src.Recent(ctx, m.state.Since, m.state.AfterID, m.batch, func(e *event.Event, id int64) error {
			batch = append(batch, e)
			since, afterID = e.Timestamp, id
			return nil
		})
		if err != nil {
			return copied, added, err
		}
		if len(batch) == 0 {
			return copied, added, nil
		}
		if filler != nil {
			if err := filler.FillTrusted(ctx, batch); err != nil {
				return copied, added, err
			}
		}
		k, err := m.dst.WriteCount(ctx, batch)
		if err != nil {
			return copied, added, err
		}
		if testHookCommitted != nil {
			testHookCommitted(n)
		}
		copied += int64(len(batch))
		added += int64(k)
		s := m.state
		s.Since, s.AfterID = since, afterID
		s.Copied += int64(len(batch))
		s.Added += int64(k)
		for _, e := range batch {
			s.Weight += e.Weight()
		}
		s.Updated = time.Now().UTC().Format(time.RFC3339)
		if err := m.save(s); err != nil {
			return copied, added, err
		}
		m.progress.show(s.Copied, max(total, s.Copied))
		if len(batch) < m.batch {
			return copied, added, nil
		}
	}
}

// verification compares the stores after a copy.
type verification struct {
	srcEvents, dstEvents int64
	srcLists, dstLists   [2]int64 // IPs, numbers
	problems             []string // the copy is not whole: exit 3
	warnings             []string // expected differences the operator should know of
}

var listNames = [2]string{"IP addresses", "numbers"}

func verify(ctx context.Context, src migrateSource, dst migrateDestination, st *migrateState) (*verification, error) {
	v := &verification{}
	var err error
	if v.srcEvents, err = src.CountEvents(ctx); err != nil {
		return nil, err
	}
	if v.dstEvents, err = dst.CountEvents(ctx); err != nil {
		return nil, err
	}
	for i, l := range []store.List{store.IPAddresses, store.CalledNumbers} {
		if v.srcLists[i], err = src.Count(ctx, l, ""); err != nil {
			return nil, err
		}
		if v.dstLists[i], err = dst.Count(ctx, l, ""); err != nil {
			return nil, err
		}
	}
	// The source's aggregates count every sighting ever stored; its events only those that
	// retention kept. Sightings beyond what the copied events stand for had their events
	// deleted: the destination, which rebuilds aggregates from events, does not have them.
	// (Told only when every event of the source was copied: events written meanwhile would
	// look the same, and fail the check below.)
	var seen int64
	if err := src.Each(ctx, store.IPAddresses, store.ListOptions{}, func(a store.Aggregate) error {
		seen += a.Count
		return nil
	}); err != nil {
		return nil, err
	}
	pruned := seen > st.Weight && v.srcEvents <= st.Copied
	if pruned {
		v.warnings = append(v.warnings, fmt.Sprintf("the source's IP aggregates count %d sightings, its events only %d: "+
			"retention (or an import of aggregates) left sightings without events, and a migration rebuilds "+
			"aggregates from events, so the destination's counts and first-seen times leave out those %d, "+
			"and keys known only from them are not in it", seen, st.Weight, seen-st.Weight))
	}

	switch {
	case v.dstEvents < st.Copied:
		v.problems = append(v.problems, fmt.Sprintf("the destination holds %d events, fewer than the %d copied: "+
			"did retention or another program delete some? Run again with --restart (nothing is counted twice)", v.dstEvents, st.Copied))
	case st.DestinationWasEmpty && v.dstEvents > st.Copied:
		v.problems = append(v.problems, fmt.Sprintf("the destination, empty at the start, holds %d events, %d more than were copied: "+
			"something else wrote to it meanwhile (a node?); migrate into a store no node writes to", v.dstEvents, v.dstEvents-st.Copied))
	}
	switch {
	case v.srcEvents > st.Copied:
		v.problems = append(v.problems, fmt.Sprintf("the source holds %d events that were not copied: a node wrote to it during the migration "+
			"(events from peers catching up can be older than the checkpoint). Stop the node and run the same command again; "+
			"if still some are missing, add --restart (nothing is counted twice)", v.srcEvents-st.Copied))
	case v.srcEvents < st.Copied:
		v.warnings = append(v.warnings, fmt.Sprintf("the source holds %d events fewer than were copied: retention deleted some "+
			"during the migration (the destination keeps them)", st.Copied-v.srcEvents))
	}
	for i, name := range listNames {
		diff := v.srcLists[i] - v.dstLists[i]
		switch {
		case diff > 0 && pruned:
			v.warnings = append(v.warnings, fmt.Sprintf("%d %s of the source are not in the destination: all their events were deleted by retention", diff, name))
		case diff > 0:
			v.problems = append(v.problems, fmt.Sprintf("%d %s of the source are missing in the destination: run again with --restart", diff, name))
		case diff < 0 && st.DestinationWasEmpty:
			v.problems = append(v.problems, fmt.Sprintf("the destination, empty at the start, has %d %s more than the source: something else wrote to it meanwhile", -diff, name))
		}
	}
	return v, nil
}

func (v *verification) print(w io.Writer, from, to storeSpec) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tevents\tIPs\tnumbers\t")
	fmt.Fprintf(tw, "source\t%d\t%d\t%d\t\n", v.srcEvents, v.srcLists[0], v.srcLists[1])
	fmt.Fprintf(tw, "destination\t%d\t%d\t%d\t\n", v.dstEvents, v.dstLists[0], v.dstLists[1])
	tw.Flush()
	fmt.Fprintf(w, "(source %s, destination %s)\n", from, to)
}

// migrateProgress shows how far a migration is: a bar redrawn in place on a terminal, a line
// every progressEvery elsewhere (a log, a pipe). It prints only numbers.
type migrateProgress struct {
	w       io.Writer
	tty     bool
	quiet   bool
	now     func() time.Time
	start   time.Time
	from    int64 // events copied before this run (a resumed one): not in the rate
	last    time.Time
	drawn   bool
	every   time.Duration
	redraws time.Duration
}

const progressEvery = 5 * time.Second

func newMigrateProgress(w io.Writer, quiet bool, from int64) *migrateProgress {
	now := time.Now()
	return &migrateProgress{w: w, tty: isTTY(w), quiet: quiet, now: time.Now, start: now, last: now, from: from,
		every: progressEvery, redraws: 100 * time.Millisecond}
}

func (p *migrateProgress) show(done, total int64) {
	if p.quiet {
		return
	}
	now := p.now()
	interval := p.every
	if p.tty {
		interval = p.redraws
	}
	if now.Sub(p.last) < interval {
		return
	}
	p.last = now
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	rate := float64(done-p.from) / max(now.Sub(p.start).Seconds(), 1e-9)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(max(total-done, 0)) / rate * float64(time.Second)).Round(time.Second).String()
	}
	if !p.tty {
		fmt.Fprintf(p.w, "dialtrap migrate: %d of %d events (%.0f%%), %.0f events/s, about %s left\n", done, total, frac*100, rate, eta)
		return
	}
	const width = 30
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\rmigrate %3.0f%% [%s%s] %d/%d events  %.0f/s  ETA %s\033[K", frac*100,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), done, total, rate, eta)
	p.drawn = true
}

func (p *migrateProgress) finish() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
