// Node-RED settings for bench/run: loopback only, no editor credentials, quiet logs.
// bench/run passes the port and the user directory through the environment.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODE_RED_PORT || "18880", 10),
    flowFile: process.env.NODE_RED_FLOW,
    userDir: process.env.NODE_RED_USER_DIR,
    credentialSecret: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { tours: false },
};
