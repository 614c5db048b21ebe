package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"time"
)

// Checksum is an order-independent digest of a table's rows: the row count
// and the sum, modulo 2^256, of the SHA-256 of each row's canonical
// rendering. Summing (rather than hashing the sorted row hashes) needs
// constant memory however large the table, and rows differ by primary key,
// so no two equal hashes cancel out. The zero value is the checksum of no
// rows.
type Checksum struct {
	Rows int64
	sum  [4]uint64 // little-endian limbs
}

func (c Checksum) hex() string {
	var b [32]byte
	for i, limb := range c.sum {
		binary.BigEndian.PutUint64(b[24-8*i:], limb)
	}
	return hex.EncodeToString(b[:8])
}

// String is the first 16 hex digits of the sum.
func (c Checksum) String() string { return c.hex() }

// timeLayout renders times in UTC to the microsecond, the precision of both
// databases.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// add folds one row in. plain holds the clear value of encrypted columns,
// which are compared instead of their ciphertext (sealed with a fresh nonce
// under another key on each side).
func (c *Checksum) add(cols []Column, r Row, plain map[int][]byte) error {
	if len(r) != len(cols) {
		return fmt.Errorf("row has %d values for %d columns", len(r), len(cols))
	}
	h := sha256.New()
	var buf []byte
	field := func(tag byte, v []byte) {
		buf = append(buf[:0], tag)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		h.Write(buf)
		h.Write(v)
	}
	for i, v := range r {
		if p, ok := plain[i]; ok {
			field('P', p)
			continue
		}
		switch v := v.(type) {
		case nil:
			field('N', nil)
		case string:
			if cols[i].Kind == KindJSON {
				field('J', canonicalJSON(v))
			} else {
				field('S', []byte(v))
			}
		case int64:
			field('I', strconv.AppendInt(nil, v, 10))
		case bool:
			field('B', strconv.AppendBool(nil, v))
		case time.Time:
			field('T', v.UTC().AppendFormat(nil, timeLayout))
		case []byte:
			field('X', v)
		default:
			return fmt.Errorf("column %s: unexpected value of type %T", cols[i].Name, v)
		}
	}
	var d [32]byte
	h.Sum(d[:0])
	var carry uint64
	for i := range c.sum {
		c.sum[i], carry = bits.Add64(c.sum[i], binary.BigEndian.Uint64(d[24-8*i:]), carry)
	}
	c.Rows++
	return nil
}

// canonicalJSON renders a JSON document with sorted keys and no spacing,
// numbers as written, the way jsonb and a TEXT copy of it compare equal.
// Text that is not JSON is rendered as it is.
func canonicalJSON(s string) []byte {
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return []byte(s)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return []byte(s)
	}
	return out
}
