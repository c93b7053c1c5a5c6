// Report-card plumbing shared by the Java compatibility programs (JavaCompat,
// ToolsCompat): runs named scenarios one at a time, each with a time limit and
// catching its own failure, and renders the results as the one-line JSON the
// other report cards print:
//   {"client": ..., "version": ..., "results": {scenario: "pass" | "fail: reason"}}

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

final class Report {
    interface Body {
        void run() throws Exception;
    }

    private final Map<String, String> results = new LinkedHashMap<>();
    private final long timeoutSeconds;
    /** Scenarios run on daemon threads so that a hung one can be abandoned. */
    private final ExecutorService runner = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "scenario");
        t.setDaemon(true);
        return t;
    });

    Report(long timeoutSeconds) {
        this.timeoutSeconds = timeoutSeconds;
    }

    /** Runs one scenario, records "pass" or "fail: reason", logs progress to stderr. */
    void scenario(String name, Body body) {
        System.err.println("-- " + name);
        long t0 = System.nanoTime();
        Future<?> f = runner.submit(() -> {
            body.run();
            return null;
        });
        String result;
        try {
            f.get(timeoutSeconds, TimeUnit.SECONDS);
            result = "pass";
        } catch (TimeoutException e) {
            f.cancel(true);
            result = "fail: timed out after " + timeoutSeconds + " s";
        } catch (ExecutionException e) {
            result = "fail: " + describe(e.getCause());
        } catch (InterruptedException e) {
            result = "fail: interrupted";
        }
        results.put(name, result);
        System.err.printf("   %s (%.1f s)%n", result, (System.nanoTime() - t0) / 1e9);
    }

    long passed() {
        return results.values().stream().filter("pass"::equals).count();
    }

    int size() {
        return results.size();
    }

    String json(String client, String version) {
        StringBuilder sb = new StringBuilder();
        sb.append("{\"client\": ").append(quote(client));
        sb.append(", \"version\": ").append(quote(version));
        sb.append(", \"results\": {");
        String sep = "";
        for (Map.Entry<String, String> e : results.entrySet()) {
            sb.append(sep).append(quote(e.getKey())).append(": ").append(quote(e.getValue()));
            sep = ", ";
        }
        return sb.append("}}").toString();
    }

    static void check(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    /** One line: the assertion message, or the root exception's class and message. */
    static String describe(Throwable t) {
        while ((t instanceof ExecutionException || t instanceof CompletionException) && t.getCause() != null) {
            t = t.getCause();
        }
        String message = t instanceof AssertionError ? String.valueOf(t.getMessage())
                : t.getClass().getSimpleName() + (t.getMessage() == null ? "" : ": " + t.getMessage());
        message = message.replaceAll("\\s+", " ").trim();
        return message.length() > 500 ? message.substring(0, 500) + "..." : message;
    }

    /** A JSON string literal. */
    static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (ch < 0x20) {
                        sb.append(String.format("\\u%04x", (int) ch));
                    } else {
                        sb.append(ch);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }
}
