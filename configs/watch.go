package configs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce lets an editor finish its write/rename dance before we read.
const watchDebounce = 250 * time.Millisecond

// Watch reloads the config (trigger "file") when its file changes, until ctx
// is done; then it returns nil. It watches the file's directory, not the
// file: editors and config managers replace files by rename, which would
// silently end a watch on the old inode. A refused or unreadable file is
// just a failed reload; the watch goes on.
func (l *Live) Watch(ctx context.Context) error {
	abs, err := filepath.Abs(l.Current().Path)
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch config directory %s: %w", dir, err)
	}
	if l.watching != nil {
		l.watching()
	}

	timer := time.NewTimer(watchDebounce)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time // nil until an event arms the debounce
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch config: watcher closed")
			}
			if !relevant(ev, base) {
				continue
			}
			timer.Reset(watchDebounce)
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch config: watcher closed")
			}
			// Overflow and friends: we may have missed an event, so reload
			// anyway; an unchanged file costs one parse.
			l.log.Warn("config watch error", "dir", dir, "err", err)
			timer.Reset(watchDebounce)
			fire = timer.C
		case <-fire:
			fire = nil
			l.Reload("file")
		}
	}
}

// relevant keeps events about the config file itself, and the "..data"
// symlink swap Kubernetes uses to update mounted ConfigMaps atomically.
func relevant(ev fsnotify.Event, base string) bool {
	if ev.Op == fsnotify.Chmod {
		return false // touch, indexers: content did not change
	}
	name := filepath.Base(ev.Name)
	return name == base || strings.HasPrefix(name, "..")
}
