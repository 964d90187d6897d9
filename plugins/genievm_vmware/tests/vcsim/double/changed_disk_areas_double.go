/*
TEST DOUBLE, not part of govmomi: vcsim has no changed-block tracking, so GenieVM's
test launcher compiles this file into the simulator package (see ../build.sh).

QueryChangedDiskAreasDouble answers QueryChangedDiskAreas from the data the tests
wrote into the disk files (through the datastore's /folder URL; the "-flat.vmdk" extent
where there is one, as on ESXi, else the ".vmdk" file itself). When a snapshot of
a VM with changeTrackingEnabled is created, every disk file is read in 64 KiB blocks
and a record of its block hashes is kept under a new changeId, which is set on the
snapshot's copy of the disk backing (vcsim itself leaves changeId empty). Then

  - changeId "*" answers the blocks that are not all zeros (vSphere: the allocated areas);
  - a changeId given earlier answers the blocks whose hash differs between that
    record and the snapshot's (and every block past the earlier size);
  - an unknown changeId is refused with InvalidArgument, as vSphere refuses a changeId
    after a CBT reset; POST /genievm-double/forget-change-ids forgets every record,
    which is how the tests make such a reset.

Answers are paged: at most maxAreasPerAnswer areas each, with length saying how far
the answer covers, so clients must loop on startOffset as they must with vSphere.
*/

package simulator

import (
	"crypto/sha1"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	cbtBlockDouble    = 64 << 10
	maxAreasPerAnswer = 256
)

type diskRecordDouble struct {
	capacity int64
	hashes   [][sha1.Size]byte // nil entry: an all-zero block
}

var cbtDouble = struct {
	sync.Mutex
	seq     int
	records map[string]*diskRecordDouble // changeId -> the disk's blocks at that snapshot
	bySnap  map[string]string            // "snapshot-N/deviceKey" -> changeId
}{records: map[string]*diskRecordDouble{}, bySnap: map[string]string{}}

// ForgetChangeIdsDouble forgets every changeId given so far (the tests' CBT reset).
func ForgetChangeIdsDouble() {
	cbtDouble.Lock()
	defer cbtDouble.Unlock()
	cbtDouble.records = map[string]*diskRecordDouble{}
	cbtDouble.bySnap = map[string]string{}
}

func (vm *VirtualMachine) diskFileDouble(fileName string) (string, error) {
	p, fault := parseDatastorePath(fileName)
	if fault != nil {
		return "", fmt.Errorf("bad datastore path %q", fileName)
	}
	ds, ok := Map.FindByName(p.Datastore, vm.Datastore).(*Datastore)
	if !ok {
		return "", fmt.Errorf("no datastore %q", p.Datastore)
	}
	file := path.Join(ds.Info.GetDatastoreInfo().Url, p.Path)
	// as on ESXi, a disk made by CreateVM keeps its data in "<name>-flat.vmdk" beside the descriptor
	if flat := strings.TrimSuffix(file, ".vmdk") + "-flat.vmdk"; strings.HasSuffix(file, ".vmdk") {
		if _, err := os.Stat(flat); err == nil {
			return flat, nil
		}
	}
	return file, nil
}

func readRecordDouble(file string, capacity int64) (*diskRecordDouble, error) {
	rec := &diskRecordDouble{capacity: capacity}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, cbtBlockDouble)
	zero := make([]byte, cbtBlockDouble)
	for off := int64(0); off < capacity; off += cbtBlockDouble {
		n, err := io.ReadFull(f, buf)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return nil, err
		}
		for i := n; i < len(buf); i++ {
			buf[i] = 0
		}
		if string(buf) == string(zero) {
			rec.hashes = append(rec.hashes, [sha1.Size]byte{})
		} else {
			rec.hashes = append(rec.hashes, sha1.Sum(buf))
		}
	}
	return rec, nil
}

// snapshotChangeIdsDouble records the VM's disks for a new snapshot and gives the
// snapshot's copy of each disk backing a changeId. Called by CreateSnapshotTask (patched).
func snapshotChangeIdsDouble(vm *VirtualMachine, snapshot *VirtualMachineSnapshot) {
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return
	}
	devices := make([]types.BaseVirtualDevice, len(vm.Config.Hardware.Device))
	copy(devices, vm.Config.Hardware.Device)
	cbtDouble.Lock()
	defer cbtDouble.Unlock()
	for i, device := range devices {
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		file, err := vm.diskFileDouble(backing.FileName)
		if err != nil {
			vm.logPrintf("QueryChangedDiskAreasDouble: %s", err)
			continue
		}
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		rec, err := readRecordDouble(file, capacity)
		if err != nil {
			vm.logPrintf("QueryChangedDiskAreasDouble: %s", err)
			continue
		}
		cbtDouble.seq++
		changeId := fmt.Sprintf("52 67 65 6e 69 65 76 6d-double/%d", cbtDouble.seq)
		cbtDouble.records[changeId] = rec
		cbtDouble.bySnap[fmt.Sprintf("%s/%d", snapshot.Self.Value, disk.Key)] = changeId
		diskCopy := *disk
		backingCopy := *backing
		backingCopy.ChangeId = changeId
		diskCopy.Backing = &backingCopy
		devices[i] = &diskCopy
	}
	snapshot.Config.Hardware.Device = devices
}

// QueryChangedDiskAreas is the test double described at the top of this file.
func (vm *VirtualMachine) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(msg string, fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = Fault(msg, fault)
		return body
	}
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return fail("changed block tracking is off", &types.FileFault{File: vm.Config.Files.VmPathName})
	}
	if req.Snapshot == nil {
		return fail("a snapshot is required", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	cbtDouble.Lock()
	defer cbtDouble.Unlock()
	current, ok := cbtDouble.records[cbtDouble.bySnap[fmt.Sprintf("%s/%d", req.Snapshot.Value, req.DeviceKey)]]
	if !ok {
		return fail("no changed-block record of that snapshot and disk", &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	var earlier *diskRecordDouble
	if req.ChangeId != "*" {
		if earlier, ok = cbtDouble.records[req.ChangeId]; !ok {
			return fail("A specified parameter was not correct: changeId", &types.InvalidArgument{InvalidProperty: "changeId"})
		}
	}
	if req.StartOffset < 0 || req.StartOffset > current.capacity {
		return fail("startOffset past the disk's end", &types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset}
	end := current.capacity
	for b := int(req.StartOffset / cbtBlockDouble); int64(b)*cbtBlockDouble < current.capacity; b++ {
		zero := current.hashes[b] == [sha1.Size]byte{}
		var changed bool
		if earlier == nil {
			changed = !zero
		} else {
			changed = b >= len(earlier.hashes) || earlier.hashes[b] != current.hashes[b]
		}
		if !changed {
			continue
		}
		start := int64(b) * cbtBlockDouble
		length := int64(cbtBlockDouble)
		if start+length > current.capacity {
			length = current.capacity - start
		}
		n := len(info.ChangedArea)
		if n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == start {
			info.ChangedArea[n-1].Length += length
			continue
		}
		if n == maxAreasPerAnswer {
			end = start
			break
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: start, Length: length})
	}
	info.Length = end - req.StartOffset
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}
