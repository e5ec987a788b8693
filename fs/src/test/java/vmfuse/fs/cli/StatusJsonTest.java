package vmfuse.fs.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import vmfuse.fs.control.Answer;

/** `vmfuse status --json`: the status answer as one object, every field named, sizes in bytes. */
class StatusJsonTest {
    @Test
    void theStatusAnswerIsOneObjectWithEveryFieldNamed() throws Exception {
        List<Answer> answer = List.of(new Answer.Mount("/mnt", 42, "/store"), new Answer.StoreSpace(1000, 500),
                new Answer.Image("a\tb.raw", 1 << 20, 4096, 0, 0, 1), new Answer.Total(1, 1 << 20, 4096, 0, 0),
                new Answer.VmFailed("vm9", "vm9.raw", "no image"),
                new Answer.Vm("vm1", "a\tb.raw", "/run/vm1.agent", 3, 0, 4096, 8192, 8192, 0, 0, 0, 0.25, 0, 0));
        JsonNode j = new ObjectMapper().readTree(new ObjectMapper().writeValueAsString(StatusCommand.Json.of(answer)));
        assertEquals("/mnt", j.at("/mount/mountPoint").asText());
        assertEquals(42, j.at("/mount/pid").asLong());
        assertEquals(500, j.at("/store/free").asLong());
        assertEquals("a\tb.raw", j.at("/images/0/name").asText(), "names as they are: JSON escapes them");
        assertEquals(1 << 20, j.at("/total/size").asLong());
        assertEquals(8192, j.at("/vms/0/punched").asLong());
        assertEquals(0.25, j.at("/vms/0/threshold").asDouble());
        assertEquals("no image", j.at("/failedVms/0/reason").asText());
    }
}
