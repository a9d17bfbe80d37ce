// Package fsutil holds the file-system patterns several packages need: writing a small file
// (node id, node key, certificate) so that a crash never leaves half of it behind, and an
// exclusive lock that says which process holds it.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteFileAtomic writes data to path with mode perm through a synced temporary file in the
// same directory and a rename: readers see the old file or the whole new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("held by another process")

// Lock takes an exclusive lock on the file at path (created 0600), without waiting, and
// writes this process's id into it. The lock lasts until the returned file is closed or the
// process ends, however it ends. When another process holds it, the error wraps ErrLocked and
// pid is that process's id as it wrote it (0 if unknown).
func Lock(path string) (f *os.File, pid int, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 32))
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, pid, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, 0, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, 0, nil
}
