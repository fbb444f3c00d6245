/**
 * The run ID rule of the contract. lua/includes/entry_rules.lua applies the same rule at
 * intake (Lua patterns cannot share a JS regex); the Letta client checks it again before a
 * request, so no ID ("..", "a/b") can leave /v1/runs/.
 */
export const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
