package cliclient

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// maxSizeBytes bounds a size flag that is not a memory limit (--scratch):
// 1Ti, the most a workload may ask for.
const maxSizeBytes = 1 << 40

// ParseSize parses a size such as "64Mi", "1Gi" or "1048576" into bytes,
// as ParseMemory does but up to 1Ti. An empty string means none (0).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], s[i:]
	mult, ok := byteUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	bytes := f * mult
	if bytes != math.Trunc(bytes) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if bytes > maxSizeBytes {
		return 0, fmt.Errorf("%q is more than 1Ti", s)
	}
	return int64(bytes), nil
}
