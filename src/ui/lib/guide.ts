/** Whether the "first steps" guide was dismissed in this browser (localStorage; it then stays closed). */
export const GUIDE_KEY = 'steerlab:guide-dismissed';

export function guideDismissed(): boolean {
  try {
    return localStorage.getItem(GUIDE_KEY) === '1';
  } catch {
    return false; // storage disabled: the guide shows, and closes for the page only
  }
}
