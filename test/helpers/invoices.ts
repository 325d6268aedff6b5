import type { Invoice } from "../../src/demo/index.js";

/** The seed's route: invoices keyed by invoice number and transaction id, scoped by tenant. */
export const invoiceRoute = (over: Record<string, unknown> = {}) => ({
  name: "create-invoice",
  match: { method: "POST", path: "/invoices" },
  key: { from: ["body:/invoiceNumber", "body:/transactionId"] },
  scope: ["header:X-Tenant-Id"],
  ...over,
});

/** One invoice request of tenant acme, as `send` takes it. */
export const invoice = (n: string) => ({
  headers: { "x-tenant-id": "acme", "content-type": "application/json" },
  body: JSON.stringify({ invoiceNumber: n, transactionId: "T-1", amount: 10 }),
});

/** A probe of the demo backend that names the whole business key. */
export const reconcile = {
  probe: { path: "/invoices?number={body:/invoiceNumber}&transactionId={body:/transactionId}" },
  found: [200],
  notFound: [404],
};

/** Resolves at the backend's next commit. */
export function nextCommit(): { hook: (i: Invoice) => void; committed: Promise<Invoice> } {
  let hook!: (i: Invoice) => void;
  const committed = new Promise<Invoice>((resolve) => {
    hook = resolve;
  });
  return { hook, committed };
}
