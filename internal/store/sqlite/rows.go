package sqlite

import (
	"context"
	"database/sql"
	"strings"
)

// rowSizes are the row counts multi-row statements are prepared for, largest first: a
// batch's rows go out in chunks of these sizes. A statement costs more to run (database/sql,
// binding, the VM's set-up) than the B-tree insert of one small row, so a batch's rows of
// one kind cost a few statements, not one each. 64 rows stay well under SQLite's 32766 bound
// parameters (24 an event row).
var rowSizes = []int{64, 16, 4, 2, 1}

// chunkSize is the largest of rowSizes that n rows fill.
func chunkSize(n int) int {
	for _, size := range rowSizes {
		if n >= size {
			return size
		}
	}
	return rowSizes[len(rowSizes)-1]
}

// values is the VALUES list of n rows of cols parameters each.
func values(n, cols int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	return strings.TrimSuffix(strings.Repeat(row+",", n), ",")
}

// multiRow is one statement prepared for each of rowSizes.
type multiRow struct {
	cols  int
	stmts map[int]*sql.Stmt
}

// prepareRows prepares text(n) for every n of rowSizes on the writer; text gets the
// VALUES list of n rows of cols columns.
func prepareRows(prep func(string) *sql.Stmt, cols int, text func(values string) string) multiRow {
	m := multiRow{cols: cols, stmts: map[int]*sql.Stmt{}}
	for _, n := range rowSizes {
		m.stmts[n] = prep(text(values(n, cols)))
	}
	return m
}

// exec runs the statement in tx over args, m.cols values a row, in chunks of rowSizes.
func (m multiRow) exec(ctx context.Context, tx *sql.Tx, args []any) error {
	for len(args) > 0 {
		n := chunkSize(len(args) / m.cols)
		if _, err := tx.StmtContext(ctx, m.stmts[n]).ExecContext(ctx, args[:n*m.cols]...); err != nil {
			return err
		}
		args = args[n*m.cols:]
	}
	return nil
}
