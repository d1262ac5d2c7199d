package cluster

import (
	"encoding/json"
	"testing"
)

// FuzzMembershipEntries: whatever key and value etcd hands back under the
// members prefix (a corrupt write, another program's keys, an older
// version's layout), the view never panics, a bad entry only makes its
// rank read as missing, and a group reported ready has every rank
// present, valid and of one incarnation.
func FuzzMembershipEntries(f *testing.F) {
	good, err := json.Marshal(reg("g", 1, 2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(memberKey("g", 1), good)
	f.Add(memberKey("g", 7), good)
	f.Add(membersPrefix+"g/1/x", good)
	f.Add(memberKey("g", 1), []byte(`{"role":"decode","group":"g","rank":1,"tp":-3}`))
	f.Add(memberKey("g", 1), []byte(`{"role":"decode","group":"g","rank":1,"tp":2,"addr":"a","model":"m","kv_block_size":16,"incarnation":1}`))
	f.Add(membersPrefix+"/0", []byte("{}"))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		r0, err := json.Marshal(reg("g", 0, 2))
		if err != nil {
			t.Fatal(err)
		}
		entries := map[string][]byte{memberKey("g", 0): r0, key: value}
		for _, g := range buildGroups(entries) {
			if !g.Ready() {
				continue
			}
			for i, r := range g.Ranks {
				if r.Validate() != nil || r.Rank != i || r.Group != g.Name || r.Incarnation != g.Incarnation || !g.Role.Valid() {
					t.Fatalf("ready group %+v holds rank %d %+v", g, i, r)
				}
			}
		}
	})
}

// FuzzRendezvousKey: a rendezvous key read back from etcd is a rank of
// the group or an error, never a panic or a rank out of range.
func FuzzRendezvousKey(f *testing.F) {
	prefix := incarnationPrefix("g", 3)
	f.Add(prefix+"1", 4)
	f.Add(prefix+"-1", 4)
	f.Add(prefix+"01", 4)
	f.Add(prefix+"9999999999999999999999", 4)
	f.Add(rendezvousPrefix("g")+"1", 2)
	f.Fuzz(func(t *testing.T, key string, size int) {
		if size < 1 || size > 1<<20 {
			return
		}
		r, err := rendezvousRank([]byte(key), prefix, size)
		if err == nil && (r < 0 || r >= size) {
			t.Fatalf("key %q: rank %d of a group of %d", key, r, size)
		}
	})
}
