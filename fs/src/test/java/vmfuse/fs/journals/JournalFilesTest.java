package vmfuse.fs.journals;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import vmfuse.fs.space.ReleaseLedger;
import vmfuse.fs.volume.Bytes;
import vmfuse.fs.volume.JournalVolume;
import vmfuse.journal.Durability;
import vmfuse.journal.JournalDevice;
import vmfuse.journal.JournalStore;

/**
 * The journals/ directory below the doors. An unlink or a rename onto a device a door has open
 * that libfuse did not hide first (it hides only the mount's opens; the NBD door's come here
 * plainly) keeps the device for its open volumes until their last close: a review found a
 * running VM's journal deleted under it by an rm.
 */
class JournalFilesTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;
    private JournalStore store;
    private ReleaseLedger ledger;
    private JournalFiles files;

    @BeforeEach
    void open() throws Exception {
        store = JournalStore.open(dir.resolve("journals.db"));
        ledger = ReleaseLedger.load(dir.resolve("releases.tsv"));
        files = new JournalFiles(store, Durability.FLUSH, ledger);
    }

    @AfterEach
    void close() throws Exception {
        store.close();
    }

    private static JournalVolume written(JournalVolume v, int fill) throws Exception {
        v.write(Bytes.of(Bytes.filled(4 * BLOCK, fill)), 4 * BLOCK, 0);
        v.sync(true);
        return v;
    }

    private List<String> allDevices() {
        return store.list().stream().map(JournalDevice::name).toList();
    }

    @Test
    void anOpenDeviceUnlinkedIsKeptForItsVolumesUntilTheLastClose() throws Exception {
        JournalVolume a = written(files.create("j"), 7);
        JournalVolume b = files.open("j");
        files.unlink("j");
        assertEquals(List.of(), files.list(), "gone from the directory at once");
        assertArrayEquals(Bytes.filled(4 * BLOCK, 7), Bytes.read(a, 0, 4 * BLOCK), "the VM reads on");
        written(b, 8); // and writes on
        a.close();
        assertEquals(1, allDevices().size(), "kept, hidden, for the other volume");
        assertArrayEquals(Bytes.filled(4 * BLOCK, 8), Bytes.read(b, 0, 4 * BLOCK));
        b.close();
        assertEquals(List.of(), allDevices(), "deleted at the last close");
        assertEquals(4 * BLOCK, ledger.total().bytes(), "and its release counted");
        files.create("j").close(); // the name is free
    }

    @Test
    void anOpenDeviceARenameReplacesIsKeptUntilItsLastClose() throws Exception {
        JournalVolume running = written(files.create("j"), 7);
        written(files.create("k"), 9).close();
        files.rename("k", "j");
        assertEquals(List.of("j"), files.list());
        assertArrayEquals(Bytes.filled(4 * BLOCK, 7), Bytes.read(running, 0, 4 * BLOCK), "the VM's own device");
        JournalVolume now = files.open("j");
        assertArrayEquals(Bytes.filled(4 * BLOCK, 9), Bytes.read(now, 0, 4 * BLOCK), "the name is k's device");
        now.close();
        running.close();
        assertEquals(List.of("j"), allDevices(), "the replaced one is deleted at its last close");
        assertTrue(ledger.total().bytes() >= 4 * BLOCK);
    }

    @Test
    void aClosedDeviceIsDeletedAtOnceAndHiddenOnesAreDroppedAtMount() throws Exception {
        written(files.create("j"), 7).close();
        files.unlink("j");
        assertEquals(List.of(), allDevices());
        written(files.create("k"), 7);
        files.unlink("k"); // open, and then the daemon dies: the next mount (no opens) drops what was set aside
        assertEquals(1, allDevices().size());
        assertEquals(1, new JournalFiles(store, Durability.FLUSH, ledger).dropHidden());
        assertEquals(List.of(), allDevices());
    }
}
