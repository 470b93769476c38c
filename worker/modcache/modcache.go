// Package modcache keeps the worker's modules on disk by content digest
// (<dir>/<hex>.wasm). A missing module is fetched once however many instances
// ask for it at the same time, its sha256 verified while it streams into a
// temporary file, and only then renamed into place: the cache never holds
// bytes that do not match their name.
//
// The cache can be bounded (SetLimit, agent --module-cache-size): it then
// evicts the least recently used modules that no instance uses (the worker
// pins the modules of the instances it holds), never a pinned one, and
// refuses a module that alone is larger than the bound (ErrTooLarge), before
// fetching it when its size is known. Pinned modules are kept whatever
// their total: a node runs what it was given, and the modules it holds
// beside them are what the bound limits.
package modcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// ErrDigestMismatch is returned when fetched bytes do not hash to the digest
// they were fetched by.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrTooLarge is returned for a module larger than the cache's bound: this
// node cannot hold it at all (a *TooLargeError says by how much).
var ErrTooLarge = errors.New("module larger than the module cache")

// TooLargeError is a module that alone exceeds the cache's bound.
type TooLargeError struct {
	Digest string
	Size   int64 // its size, or how much of it had arrived when it passed the bound
	Limit  int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("module %s is %s, more than this node's module cache holds (%s, agent --module-cache-size)",
		e.Digest, FormatBytes(e.Size), FormatBytes(e.Limit))
}

// Unwrap makes errors.Is(err, ErrTooLarge) hold.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// Fetch writes the bytes of the blob named digest to w.
type Fetch func(ctx context.Context, digest string, w io.Writer) error

const (
	digestPrefix = "sha256:"
	fileSuffix   = ".wasm"
	tmpSuffix    = ".tmp"
)

// Cache is a directory of verified modules.
type Cache struct {
	dir   string
	fetch Fetch
	group singleflight.Group

	mu       sync.Mutex
	verified map[string]bool // hex digests whose file was checked by this process
	// The bound (0: none), the modules on disk by hex digest, their total
	// size, and the instances using each (Pin).
	limit   int64
	entries map[string]*entry
	total   int64
	pins    map[string]int
	tick    uint64 // orders uses, for least recently used
	evicted int64  // modules evicted since New
}

// entry is one module file on disk.
type entry struct {
	size int64
	used uint64 // c.tick at its latest use
}

// New returns a cache over dir that fills misses with fetch. It removes the
// temporary files an interrupted fetch may have left.
func New(dir string, fetch Fetch) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("modcache: %w", err)
	}
	leftovers, err := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix))
	if err != nil {
		return nil, fmt.Errorf("modcache: %w", err)
	}
	for _, p := range leftovers {
		_ = os.Remove(p) // Best effort: a stale temp file only wastes space.
	}
	c := &Cache{dir: dir, fetch: fetch, verified: map[string]bool{}, entries: map[string]*entry{}, pins: map[string]int{}}
	if err := c.scan(); err != nil {
		return nil, fmt.Errorf("modcache: %w", err)
	}
	return c, nil
}

// scan takes the modules an earlier run left, oldest (by modification
// time) least recently used.
func (c *Cache) scan() error {
	files, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	type found struct {
		h    string
		size int64
		mod  time.Time
	}
	var all []found
	for _, f := range files {
		h, ok := strings.CutSuffix(f.Name(), fileSuffix)
		if !ok || !f.Type().IsRegular() {
			continue
		}
		if _, err := ParseDigest(digestPrefix + h); err != nil {
			continue
		}
		info, err := f.Info()
		if err != nil {
			continue // removed meanwhile
		}
		all = append(all, found{h, info.Size(), info.ModTime()})
	}
	slices.SortFunc(all, func(a, b found) int { return a.mod.Compare(b.mod) })
	for _, f := range all {
		c.tick++
		c.entries[f.h] = &entry{size: f.size, used: c.tick}
		c.total += f.size
	}
	return nil
}

// SetLimit bounds the modules the cache keeps to bytes (0: no bound),
// evicting at once the least recently used unpinned modules over it.
func (c *Cache) SetLimit(bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = max(0, bytes)
	c.trimLocked(0)
}

// Pin marks the module named digest as used by one more instance: it is
// not evicted until as many Unpin calls. An invalid digest is ignored.
func (c *Cache) Pin(digest string) {
	h, err := ParseDigest(digest)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pins[h]++
}

// Unpin undoes one Pin. A module no instance uses any more counts as used
// now, and the cache is trimmed to its bound.
func (c *Cache) Unpin(digest string) {
	h, err := ParseDigest(digest)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pins[h]--; c.pins[h] > 0 {
		return
	}
	delete(c.pins, h)
	c.touchLocked(h)
	c.trimLocked(0)
}

// Usage is what the cache holds.
type Usage struct {
	Modules int   // module files on disk
	Bytes   int64 // their total size
	Pinned  int   // modules some instance uses
	Limit   int64 // the bound; 0: none
	Evicted int64 // modules evicted since the cache was opened
}

// Usage says what the cache holds now.
func (c *Cache) Usage() Usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Usage{Modules: len(c.entries), Bytes: c.total, Pinned: len(c.pins), Limit: c.limit, Evicted: c.evicted}
}

// touchLocked records a use of h.
func (c *Cache) touchLocked(h string) {
	if e := c.entries[h]; e != nil {
		c.tick++
		e.used = c.tick
	}
}

// trimLocked evicts unpinned modules, least recently used first, until
// the cache holds at most its bound less room.
func (c *Cache) trimLocked(room int64) {
	if c.limit <= 0 {
		return
	}
	for c.total+room > c.limit {
		victim := ""
		var oldest uint64
		for h, e := range c.entries {
			if c.pins[h] > 0 {
				continue
			}
			if victim == "" || e.used < oldest {
				victim, oldest = h, e.used
			}
		}
		if victim == "" {
			return // everything left is in use
		}
		if err := os.Remove(c.path(victim)); err != nil && !os.IsNotExist(err) {
			return // cannot free it; keep counting it
		}
		c.total -= c.entries[victim].size
		delete(c.entries, victim)
		delete(c.verified, victim)
		c.evicted++
	}
}

// addLocked records the module file of h, size bytes.
func (c *Cache) addLocked(h string, size int64) {
	if e := c.entries[h]; e != nil {
		c.total -= e.size
	}
	c.tick++
	c.entries[h] = &entry{size: size, used: c.tick}
	c.total += size
}

// checkSize refuses a module of size bytes (0: not known) that alone
// exceeds the bound.
func (c *Cache) checkSize(digest string, size int64) error {
	c.mu.Lock()
	limit := c.limit
	c.mu.Unlock()
	if limit > 0 && size > limit {
		return &TooLargeError{Digest: digest, Size: size, Limit: limit}
	}
	return nil
}

// ParseDigest checks that digest is "sha256:<64 lower-case hex>" and returns
// the hex part.
func ParseDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, digestPrefix)
	if !ok || len(h) != sha256.Size*2 || strings.ToLower(h) != h {
		return "", errdefs.Invalidf("module digest %q: want sha256:<64 lower-case hex>", digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", errdefs.Invalidf("module digest %q: want sha256:<64 lower-case hex>", digest)
	}
	return h, nil
}

// Path returns where the module named digest is (or would be) kept.
func (c *Cache) Path(digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return c.path(h), nil
}

func (c *Cache) path(h string) string { return filepath.Join(c.dir, h+fileSuffix) }

// Get returns the path of the verified module named digest, fetching it if
// it is not cached. Concurrent calls for one digest share one fetch. size
// is the module's size if known (0: not known): a module larger than the
// cache's bound is refused with a *TooLargeError, before it is fetched
// when its size is known, as it arrives otherwise. The caller should have
// pinned the module, so that it is not evicted before it is used.
func (c *Cache) Get(ctx context.Context, digest string, size int64) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	if err := c.checkSize(digest, size); err != nil {
		return "", err
	}
	path := c.path(h)
	if c.isVerified(h) {
		if _, err := os.Stat(path); err == nil {
			c.mu.Lock()
			c.touchLocked(h)
			c.mu.Unlock()
			return path, nil
		}
		c.setVerified(h, false)
	}
	// The shared fetch runs under the first caller's context; if that caller
	// gives up, the others try once more under their own.
	for attempt := 0; ; attempt++ {
		ch := c.group.DoChan(h, func() (any, error) { return nil, c.fill(ctx, digest, h, path, size) })
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-ch:
			if r.Err == nil {
				return path, nil
			}
			canceled := errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)
			if canceled && ctx.Err() == nil && attempt == 0 {
				continue
			}
			return "", r.Err
		}
	}
}

// fill makes path hold the verified bytes of digest.
func (c *Cache) fill(ctx context.Context, digest, h, path string, size int64) error {
	if c.isVerified(h) {
		return nil
	}
	// A file from an earlier run is trusted once it hashes right again.
	if got, n, err := hashFile(path); err == nil {
		if got == h {
			c.mu.Lock()
			c.addLocked(h, n)
			c.verified[h] = true
			c.mu.Unlock()
			return nil
		}
		_ = os.Remove(path) // Corrupt on disk: fetch it afresh.
		c.mu.Lock()
		if e := c.entries[h]; e != nil {
			c.total -= e.size
			delete(c.entries, h)
		}
		c.mu.Unlock()
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	c.mu.Lock()
	limit := c.limit
	c.mu.Unlock()

	tmp, err := os.CreateTemp(c.dir, h+".*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()           // May be closed already.
			_ = os.Remove(tmp.Name()) // Don't leave unverified bytes behind.
		}
	}()
	sum := sha256.New()
	// Room is made for it once its first bytes arrive, so that the disk
	// never holds more than the bound of modules no instance uses, and a
	// fetch that cannot begin (edge: no control plane to fetch from)
	// evicts nothing.
	room := &makeRoom{w: io.MultiWriter(tmp, sum), c: c, size: size}
	out := &bounded{w: room, limit: limit}
	if err := c.fetch(ctx, digest, out); err != nil {
		if out.over {
			return &TooLargeError{Digest: digest, Size: out.n, Limit: limit}
		}
		return fmt.Errorf("modcache: fetching module %s: %w", digest, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		return fmt.Errorf("modcache: fetching module %s: %w: the bytes hash to sha256:%s", digest, ErrDigestMismatch, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	renamed = true
	c.mu.Lock()
	c.addLocked(h, out.n)
	c.verified[h] = true
	c.trimLocked(0)
	c.mu.Unlock()
	return nil
}

// makeRoom is a writer that trims the cache to make room for size bytes
// before the first write.
type makeRoom struct {
	w    io.Writer
	c    *Cache
	size int64
	made bool
}

func (m *makeRoom) Write(p []byte) (int, error) {
	if !m.made {
		m.made = true
		m.c.mu.Lock()
		m.c.trimLocked(m.size)
		m.c.mu.Unlock()
	}
	return m.w.Write(p)
}

// bounded is a writer that fails once more than limit bytes (0: no
// limit) were written to it.
type bounded struct {
	w     io.Writer
	limit int64
	n     int64
	over  bool
}

func (b *bounded) Write(p []byte) (int, error) {
	if b.limit > 0 && b.n+int64(len(p)) > b.limit {
		b.n += int64(len(p))
		b.over = true
		return 0, ErrTooLarge
	}
	n, err := b.w.Write(p)
	b.n += int64(n)
	return n, err
}

// FormatBytes writes a size as the cache's messages do: "512 KiB",
// "1.5 MiB", "2 GiB".
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

func (c *Cache) isVerified(h string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified[h]
}

func (c *Cache) setVerified(h string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.verified[h] = true
	} else {
		delete(c.verified, h)
	}
}

// hashFile returns the hex sha256 of the file at path and its size.
func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(sum.Sum(nil)), n, nil
}

// TrimDir removes the oldest files (by modification time) under dir until
// those left total at most limit bytes, and returns how many it removed and
// what they held. It is for a cache whose every file can be made again
// (wazero's compiled code): files whose name ends in .tmp are being
// written and are left alone. A dir that does not exist holds nothing.
func TrimDir(dir string, limit int64) (removed int, freed int64, err error) {
	type file struct {
		path string
		size int64
		mod  time.Time
	}
	var files []file
	var total int64
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // gone meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() || strings.HasSuffix(d.Name(), tmpSuffix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		files = append(files, file{path, info.Size(), info.ModTime()})
		total += info.Size()
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("modcache: trimming %s: %w", dir, err)
	}
	if total <= limit {
		return 0, 0, nil
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range files {
		if total <= limit {
			break
		}
		if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
			return removed, freed, fmt.Errorf("modcache: trimming %s: %w", dir, err)
		}
		total -= f.size
		removed++
		freed += f.size
	}
	return removed, freed, nil
}
