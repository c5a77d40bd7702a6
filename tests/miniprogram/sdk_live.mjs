// The SDK's client and offline voucher against the running server (real login, refresh, a refresh
// whose answer was lost, logout, certifyDevice), printing one JSON report for tests/miniprogram/test_sdk_live.py.
// Usage: node sdk_live.mjs BASE_URL
const base = process.argv[2];
const report = {};
const { NetworkError, OfflineVoucher, ReloginRequired, YibaoClient, createFetchTransport, memoryStorage } = await import("../../clients/miniprogram/dist/yibao-sdk.js");

try {
  const storage = memoryStorage();
  const client = new YibaoClient({ transport: createFetchTransport(base), storage });
  await client.login("resident");
  report.me = (await client.me()).name;

  // An access token the server no longer takes (here: garbled) while the refresh token is good:
  // the call is refused, refreshed once, retried. (The new access token may equal the original: same
  // claims within the same second; the refresh token is new each time.)
  const session = await client.session();
  await storage.set("yibao.session", JSON.stringify({ ...session, accessToken: session.accessToken.slice(0, -4) + "AAAA" }));
  const [a, b] = await Promise.all([client.me(), client.settlements({ first: 3 })]);
  report.afterRefresh = { me: a.name, settlements: b.edges.length, refreshes: client.refreshCount, refreshTokenChanged: (await client.session()).refreshToken !== session.refreshToken };

  // The offline voucher: key made and kept here, certified by the server, a code composed offline and
  // verified by a pharmacy.
  const voucher = new OfflineVoucher({ client, storage });
  const certificate = await voucher.certify();
  const status = await voucher.status();
  const code = await voucher.code();
  const pharmacy = new YibaoClient({ transport: createFetchTransport(base), storage: memoryStorage() });
  await pharmacy.login("pharmacy");
  const verify = "mutation V($code: String!) { verifyVoucher(code: $code) { valid reason form certificateSerial } }";
  report.voucher = {
    state: status.state,
    notAfter: status.notAfter,
    serial: certificate.serial,
    code: code.code.slice(0, 4),
    verified: (await pharmacy.query(verify, { code: code.code })).verifyVoucher,
    again: (await pharmacy.query(verify, { code: code.code })).verifyVoucher,
  };

  // A refresh whose answer is lost on the way back (the server rotated, the phone heard a timeout): the
  // SDK sends it again with the same token, the server's grace window takes it, the login goes on.
  const refreshesSent = [];
  const fetchTransport = createFetchTransport(base);
  const lossy = {
    async request(request) {
      const response = await fetchTransport.request(request);
      const { operationName, variables } = JSON.parse(request.body);
      if (operationName === "RefreshToken") {
        refreshesSent.push(variables.refreshToken);
        if (refreshesSent.length === 1) throw new NetworkError("timeout", "request:fail timeout");
      }
      return response;
    },
  };
  const phoneStorage = memoryStorage();
  const phone = new YibaoClient({ transport: lossy, storage: phoneStorage, sleep: async () => {} });
  await phone.login("resident");
  await phoneStorage.set("yibao.session", JSON.stringify({ ...(await phone.session()), expiresAt: 0 })); // due
  const meAfterLoss = (await phone.me()).name;
  report.lostAnswer = {
    me: meAfterLoss,
    sent: refreshesSent.length,
    sameToken: refreshesSent[0] === refreshesSent[1],
    refreshes: phone.refreshCount,
    loggedIn: await phone.isLoggedIn(),
  };
  // The pair the retry got is the live one: it refreshes as usual.
  const afterLoss = await phone.session();
  const onward = await phone.refresh();
  report.lostAnswer.onward = onward.refreshToken !== afterLoss.refreshToken && (await phone.me()).name === meAfterLoss;

  // Logged out elsewhere: the refresh token is dead; the next call that needs a refresh ends in a clear
  // re-login error and an empty session.
  const other = new YibaoClient({ transport: createFetchTransport(base), storage: memoryStorage() });
  await other.storage.set("yibao.session", await storage.get("yibao.session"));
  await other.logout(); // ends the login on every device
  const s2 = await client.session();
  await storage.set("yibao.session", JSON.stringify({ ...s2, expiresAt: 0 })); // due for a refresh
  try {
    await client.me();
    report.relogin = "no error";
  } catch (error) {
    report.relogin = { isRelogin: error instanceof ReloginRequired, code: error.code, message: error.message, loggedIn: await client.isLoggedIn() };
  }
} catch (error) {
  report.error = String(error?.stack ?? error);
}
console.log(JSON.stringify(report));
