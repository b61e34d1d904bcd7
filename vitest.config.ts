import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Native addon + real servers: separate processes, no worker threads.
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ["default", "./tests/helpers/summary-reporter.ts"],
  },
});
