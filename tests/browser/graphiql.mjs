// GraphiQL, offline: `node graphiql.mjs BASE_URL SCREENSHOT.png`. Opens BASE_URL/graphql, waits for the
// editor and the schema, runs the demo login (pasted into the editor, run with the run button), puts
// the access token in the Headers editor, types `{ me { name } }` and runs it. Reports what it saw.
import { editorValue, runScenario, setEditorValue } from "./lib/browser.mjs";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node graphiql.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}

const LOGIN = 'mutation {\n  login(provider: "demo", code: "resident") {\n    accessToken\n    expiresIn\n  }\n}\n';

async function runAndRead(page, previous) {
  await page.locator("button.graphiql-execute-button").click();
  const value = await page.waitForFunction(
    ([selector, before]) => {
      const text = document.querySelector(selector)?.CodeMirror?.getValue() ?? "";
      return text !== "" && text !== before ? text : false;
    },
    ["section.result-window .CodeMirror", previous],
  );
  return value.jsonValue();
}

await runScenario(async ({ page, report }) => {
  const introspected = page.waitForResponse(
    (response) =>
      response.url().startsWith(`${base}/graphql`) &&
      response.request().method() === "POST" &&
      (response.request().postData() ?? "").includes("__schema"),
  );
  introspected.catch(() => {}); // awaited below; do not let an early failure leave it unhandled
  await page.goto(`${base}/graphql`);
  report.title = await page.title();
  const queryEditor = page.locator("section.graphiql-query-editor");
  await queryEditor.locator(".CodeMirror").waitFor();
  report.introspectionStatus = (await introspected).status();
  report.initialQuery = await editorValue(queryEditor);

  await setEditorValue(queryEditor, LOGIN);
  const loginText = await runAndRead(page, "");
  report.login = JSON.parse(loginText);
  const token = report.login?.data?.login?.accessToken;

  await page.locator('.graphiql-editor-tools button[data-name="headers"]').click();
  const headersEditor = page.locator("section.graphiql-editor-tool .graphiql-editor:visible");
  await setEditorValue(headersEditor, JSON.stringify({ Authorization: `Bearer ${token}` }));

  // Typed, as a person would: CodeMirror closes each brace as it opens, so type only up to `name`.
  await setEditorValue(queryEditor, "");
  await queryEditor.locator(".CodeMirror").click();
  await page.keyboard.type("{ me { name");
  await page.keyboard.press("Escape"); // close the completion list, if it is open
  report.typedQuery = await editorValue(queryEditor);
  report.me = JSON.parse(await runAndRead(page, loginText));

  await page.screenshot({ path: screenshot });

  // The explorer plugin (bundled too) lists the schema's root fields.
  await page.getByRole("button", { name: "Show GraphiQL Explorer" }).click();
  const explorer = page.locator(".graphiql-plugin");
  await explorer.getByText("familyLinks", { exact: true }).first().waitFor();
  report.explorerShowsSchema = true;
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-explorer.png") });
  report.screenshot = screenshot;
});
