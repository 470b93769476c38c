package wasmrt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// A function request gets a fresh instance, and wazero builds a fresh
// instance's memory by applying the module's active data segments one by
// one: a Go (GOOS=wasip1) module has ~30,000 of them (1.4 MB), and that
// was half of a Go function's request. For a function, the runtime instead
// computes the memory those segments produce once per revision (the
// module's initial memory: nothing the guest ran), compiles the module
// without them, and gives each request's instance a copy-on-write mapping
// of that image (memimage_unix.go). Where that does not apply, the module
// runs as it is.

// dataPlan is a module split in two: its code without active data
// segments, and the memory image they produce.
type dataPlan struct {
	stripped []byte // the module without its active data segments
	image    []byte // bytes 0 to the end of the last segment of the initial memory
	minBytes uint64 // the initial memory's size
}

// errNoPlan wraps the reasons a module keeps its data segments.
var errNoPlan = errors.New("no memory image")

// planImage reads a module's binary and applies its active data segments
// to a zeroed initial memory, as instantiation would. It applies to a
// module that defines one 32-bit, unshared memory and whose active
// segments have constant offsets (i32.const) within the initial memory,
// which is what the Go and C toolchains produce; otherwise it returns an
// error wrapping errNoPlan (a malformed module is left for the compiler
// to explain). Passive segments are kept. When the module has a data
// count section, each active segment becomes an empty passive one, so
// that segment indices stay valid: memory.init of one then behaves as
// the spec says for a dropped active segment.
func planImage(bin []byte) (*dataPlan, error) {
	if len(bin) < 8 || !bytes.Equal(bin[:8], []byte("\x00asm\x01\x00\x00\x00")) {
		return nil, fmt.Errorf("%w: not a WebAssembly 1.0 binary", errNoPlan)
	}
	var (
		memories  int
		minPages  uint64
		dataCount bool
		dataStart = -1 // the data section, id byte included
		dataEnd   int
		dataBody  []byte
	)
	for at := 8; at < len(bin); {
		start := at
		id := bin[at]
		size, n := binary.Uvarint(bin[at+1:])
		if n <= 0 || size > uint64(len(bin)-at-1-n) {
			return nil, fmt.Errorf("%w: malformed section at byte %d", errNoPlan, at)
		}
		body := bin[at+1+n : at+1+n+int(size)]
		at += 1 + n + int(size)
		switch id {
		case 2: // import
			imported, err := importsMemory(body)
			if err != nil {
				return nil, err
			}
			if imported {
				return nil, fmt.Errorf("%w: the module imports its memory", errNoPlan)
			}
		case 5: // memory
			r := reader{b: body}
			count := r.u32()
			if count != 1 {
				return nil, fmt.Errorf("%w: the module defines %d memories", errNoPlan, count)
			}
			flags := r.u32()
			if flags > 1 { // 2, 3: shared; 4 and up: memory64
				return nil, fmt.Errorf("%w: memory limits flags %#x", errNoPlan, flags)
			}
			memories, minPages = 1, uint64(r.u32())
			if r.err != nil {
				return nil, fmt.Errorf("%w: memory section: %v", errNoPlan, r.err)
			}
		case 12: // data count
			dataCount = true
		case 11: // data
			dataStart, dataEnd, dataBody = start, at, body
		}
	}
	if memories == 0 {
		return nil, fmt.Errorf("%w: the module defines no memory", errNoPlan)
	}
	if dataStart < 0 {
		return nil, fmt.Errorf("%w: the module has no data segments", errNoPlan)
	}

	minBytes := minPages * pageSize
	r := reader{b: dataBody}
	count := r.u32()
	var image []byte
	var kept [][]byte // each segment as the stripped module has it
	passive := false
	for i := uint32(0); i < count && r.err == nil; i++ {
		segStart := r.at
		flags := r.u32()
		switch flags {
		case 1: // passive: kept as it is
			r.bytes()
			kept = append(kept, r.b[segStart:r.at])
			passive = true
			continue
		case 2:
			if mem := r.u32(); mem != 0 {
				return nil, fmt.Errorf("%w: data segment %d is for memory %d", errNoPlan, i, mem)
			}
		case 0:
		default:
			return nil, fmt.Errorf("%w: data segment %d has flags %#x", errNoPlan, i, flags)
		}
		if op := r.byte(); op != 0x41 { // i32.const
			return nil, fmt.Errorf("%w: data segment %d has a non-constant offset (opcode %#x)", errNoPlan, i, op)
		}
		offset := uint64(uint32(r.s32()))
		if end := r.byte(); end != 0x0b {
			return nil, fmt.Errorf("%w: data segment %d's offset is not a single i32.const", errNoPlan, i)
		}
		data := r.bytes()
		if r.err != nil {
			break
		}
		last := offset + uint64(len(data))
		if last > minBytes {
			// Instantiating fails; the module as it is says so.
			return nil, fmt.Errorf("%w: data segment %d ends at byte %d, beyond the initial memory", errNoPlan, i, last)
		}
		if last > uint64(len(image)) {
			image = append(image, make([]byte, last-uint64(len(image)))...)
		}
		copy(image[offset:], data)
		kept = append(kept, []byte{0x01, 0x00}) // empty passive, if kept
	}
	if r.err == nil && r.at != len(r.b) {
		r.err = errors.New("bytes after the last segment")
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: data section: %v", errNoPlan, r.err)
	}

	stripped := make([]byte, 0, len(bin)-(dataEnd-dataStart)+8+2*len(kept))
	stripped = append(stripped, bin[:dataStart]...)
	if dataCount || passive {
		var section []byte
		section = binary.AppendUvarint(section, uint64(len(kept)))
		for _, seg := range kept {
			section = append(section, seg...)
		}
		stripped = append(stripped, 11)
		stripped = binary.AppendUvarint(stripped, uint64(len(section)))
		stripped = append(stripped, section...)
	}
	stripped = append(stripped, bin[dataEnd:]...)
	return &dataPlan{stripped: stripped, image: image, minBytes: minBytes}, nil
}

// importsMemory reads an import section and reports whether it imports a
// memory.
func importsMemory(body []byte) (bool, error) {
	r := reader{b: body}
	count := r.u32()
	for range count {
		r.bytes() // module
		r.bytes() // name
		kind := r.byte()
		switch kind {
		case 0: // function: type index
			r.u32()
		case 1: // table: reference type, limits
			r.byte()
			r.limits()
		case 2:
			return true, nil
		case 3: // global: value type, mutability
			r.byte()
			r.byte()
		default:
			return false, fmt.Errorf("%w: import of kind %#x", errNoPlan, kind)
		}
		if r.err != nil {
			break
		}
	}
	if r.err != nil {
		return false, fmt.Errorf("%w: import section: %v", errNoPlan, r.err)
	}
	return false, nil
}

// reader decodes a section's body; the first error sticks.
type reader struct {
	b   []byte
	at  int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("malformed %s at byte %d", what, r.at)
	}
}

func (r *reader) byte() byte {
	if r.err != nil || r.at >= len(r.b) {
		r.fail("byte")
		return 0
	}
	r.at++
	return r.b[r.at-1]
}

func (r *reader) u32() uint32 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.at:])
	if n <= 0 || n > 5 || v > 1<<32-1 {
		r.fail("u32")
		return 0
	}
	r.at += n
	return uint32(v)
}

// s32 reads a signed LEB128 number of at most 32 bits.
func (r *reader) s32() int32 {
	if r.err != nil {
		return 0
	}
	var v int64
	var shift uint
	for i := 0; ; i++ {
		if i == 5 || r.at >= len(r.b) {
			r.fail("s32")
			return 0
		}
		c := r.b[r.at]
		r.at++
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			break
		}
	}
	if v < -1<<31 || v > 1<<31-1 {
		r.fail("s32")
		return 0
	}
	return int32(v)
}

// bytes reads a length-prefixed byte vector.
func (r *reader) bytes() []byte {
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(r.b)-r.at) {
		r.fail("vector")
		return nil
	}
	r.at += int(n)
	return r.b[r.at-int(n) : r.at]
}

func (r *reader) limits() {
	if flags := r.byte(); flags&1 != 0 {
		r.u32()
		r.u32()
	} else {
		r.u32()
	}
}
