// The page's shared state: the SDK client, who is logged in, online or not, care mode, the replica.
import type { Sdk, Me } from "./sdk";

export interface App {
  sdk: Sdk;
  me: Me | null;
  online: boolean;
  care: boolean;
  root: HTMLElement;
  /** Re-renders the current route. */
  render(): void;
  navigate(hash: string): void;
  toast(text: string): void;
  /** Called when a page goes away (timers, subscriptions). */
  onLeave(cleanup: () => void): void;
}

const CARE_KEY = "yibao.h5.care.";

/** Care mode is remembered per user (keyed by the person's id) in the browser's storage. */
export function loadCare(personId: string): boolean {
  try {
    return localStorage.getItem(CARE_KEY + personId) === "1";
  } catch {
    return false;
  }
}

export function saveCare(personId: string, on: boolean): void {
  try {
    localStorage.setItem(CARE_KEY + personId, on ? "1" : "0");
  } catch {
    // storage full or disabled: the mode still applies to this visit
  }
}

export function applyCare(on: boolean): void {
  document.body.classList.toggle("care", on);
}
